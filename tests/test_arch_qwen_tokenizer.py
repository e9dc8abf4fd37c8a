"""Qwen (v1)'s tokenizer, read from ``qwen.tiktoken`` with tiktoken and never from the checkpoint's remote
code: compared with transformers' own tiktoken conversion (HF tokenizers' BPE) and with ids worked out
by hand, then end to end through the pipeline on a folder laid out as a real Qwen v1 one."""

import json
import shutil
import sys

import pytest
from transformers import PreTrainedTokenizerFast

from support.compare import assert_responses_match
from support.oracle import HFOracle
from support.prompts import MIXED_PROMPTS
from support.qwen_v1 import (DIGIT_TOKENS, build_tiny_qwen2, convert_to_qwen_v1, nfc, tiktoken_hf_tokenizer,
                             write_tiny_tiktoken)

MERGES = 150
SEED = 0
TEXTS = MIXED_PROMPTS + [
    "<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n",
    "digits 12345 and 3.14 in 2024, don't stop; we'll see",
    "tabs\tand\n\nnew lines   with  spaces ",
    "cafe\u0301 and caf\u00e9",  # NFD and NFC spellings of one word
    "Ünïcödé ✓ 😀 <|endoftext|> after",
]


@pytest.fixture(scope="module")
def vocab_file(tmp_path_factory):
    return write_tiny_tiktoken(tmp_path_factory.mktemp("tiktoken") / "qwen.tiktoken", merges=MERGES)


@pytest.fixture(scope="module")
def ours(vocab_file):
    from mii_plugin_qwen.tokenizer import QwenTokenizer

    return QwenTokenizer(vocab_file)


@pytest.fixture(scope="module")
def hf_tokenizer(vocab_file):
    return tiktoken_hf_tokenizer(vocab_file)


@pytest.fixture(scope="module")
def folders(vocab_file, hf_tokenizer, tmp_path_factory):
    """(HF Qwen2 folder with the converted tokenizer, Qwen v1 folder as the hub ships one: qwen.tiktoken
    and remote tokenizer code, no tokenizer.json)."""
    qwen2 = build_tiny_qwen2(tmp_path_factory.mktemp("qwen2-tiktoken"), seed=SEED, tokenizer=hf_tokenizer)
    v1 = convert_to_qwen_v1(qwen2, tmp_path_factory.mktemp("qwen-v1-tiktoken"), seq_length=2048)
    (v1 / "tokenizer.json").unlink()
    shutil.copy(vocab_file, v1 / "qwen.tiktoken")
    (v1 / "tokenizer_config.json").write_text(json.dumps({
        "auto_map": {"AutoTokenizer": ["tokenization_qwen.QWenTokenizer", None]},
        "tokenizer_class": "QWenTokenizer"}))
    (v1 / "tokenization_qwen.py").write_text("raise RuntimeError('the remote tokenizer code ran')\n")
    return qwen2, v1


def test_ids_worked_out_by_hand(ours, vocab_file):
    ranks = len(vocab_file.read_text().splitlines())
    assert ranks == 256 + MERGES + len(DIGIT_TOKENS)
    # the special tokens follow the ranks in Qwen's order: <|endoftext|>, <|im_start|>, <|im_end|>, extras
    assert ours.encode("<|endoftext|><|im_start|><|im_end|><|extra_0|><|extra_204|>") == \
        [ranks, ranks + 1, ranks + 2, ranks + 3, ranks + 207]
    assert ours.eos_token_id == ranks and len(ours) == ranks + 208
    # Qwen's pattern splits every digit on its own (\p{N}): the vocabulary's "20", "202" never apply
    assert ours.encode("2024") == [ord("2"), ord("0"), ord("2"), ord("4")]
    assert ours.encode("cafe\u0301") == ours.encode("caf\u00e9"), "text is NFC-normalised first"
    assert ours("river") == {"input_ids": ours.encode("river")} and ours.bos_token_id is None


@pytest.mark.parametrize("text", TEXTS)
def test_encode_decode_match_transformers_tiktoken_conversion(ours, hf_tokenizer, text):
    ids = ours.encode(text)
    assert ids == hf_tokenizer.encode(text)
    assert ours.decode(ids) == nfc(text)
    assert ours.decode(ids, skip_special_tokens=True) == hf_tokenizer.decode(ids, skip_special_tokens=True)


def test_pipeline_reads_qwen_tiktoken_without_remote_code(folders, pipeline):
    from mii_plugin_qwen.tokenizer import QwenTokenizer

    qwen2, v1 = folders
    hf = HFOracle(qwen2)
    hf.tokenizer = PreTrainedTokenizerFast.from_pretrained(str(qwen2))  # the converted tokenizer, as saved
    references = [hf.greedy(p, 16, ignore_eos=True) for p in MIXED_PROMPTS]
    pipe = pipeline(v1)
    assert isinstance(pipe.tokenizer, QwenTokenizer)
    responses = pipe(MIXED_PROMPTS, do_sample=False, max_new_tokens=16, ignore_eos=True)
    assert_responses_match(responses, references)
    assert "tokenization_qwen" not in sys.modules


def test_malformed_vocabulary_names_file_and_line(vocab_file, tmp_path):
    from mii_plugin_qwen.tokenizer import QwenTokenizer

    bad = tmp_path / "qwen.tiktoken"
    lines = vocab_file.read_text().splitlines()
    bad.write_text("\n".join([lines[0], "not-base64!! 1"] + lines[2:]) + "\n")
    with pytest.raises(ValueError, match=r"qwen\.tiktoken' line 2"):
        QwenTokenizer(bad)
