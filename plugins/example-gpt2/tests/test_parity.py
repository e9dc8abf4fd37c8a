"""The plugin's parity test: a tiny random GPT-2 made with transformers, greedy text from mii-core against
transformers' own generate. Run it from this folder with ``pytest`` once the plugin is installed
(``pip install -e ".[test]"``)."""
import pytest
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

TEXT = """\
GPT-2 reads text as bytes and merges the most frequent pairs into tokens.
Each layer normalises its input, attends to earlier tokens, then runs a small feed-forward network.
Learned position vectors tell the model where each token sits in the sequence.
The output layer shares its weights with the token embedding, so the model stays small.
A greedy decoder always picks the token with the highest score at every step.
"""
PROMPTS = ["tokens", "Each layer normalises", "Learned position vectors tell the model",
           "GPT-2 reads text as bytes and merges the most frequent pairs into tokens. A greedy decoder"]
NEW_TOKENS = 16
BLOCK_SIZE = 4


def train_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE like GPT-2's, trained on TEXT (nothing is downloaded)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(TEXT.splitlines(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    tokenizer = train_tokenizer()
    config = GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=128, vocab_size=len(tokenizer),
                        initializer_range=0.2,  # large weights: wide greedy margins
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    GPT2LMHeadModel(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def references(checkpoint):
    """transformers' greedy text per prompt, each run alone."""
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = GPT2LMHeadModel.from_pretrained(checkpoint).eval()
    texts = []
    for prompt in PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        out = model.generate(ids, do_sample=False, max_new_tokens=NEW_TOKENS, eos_token_id=None,
                             pad_token_id=tokenizer.eos_token_id, output_logits=True, return_dict_in_generate=True)
        top2 = torch.stack(out.logits)[:, 0].topk(2, dim=-1).values
        assert (top2[:, 0] - top2[:, 1]).min() > 1e-3, "fixture problem: a greedy near-tie; change the seed"
        texts.append(tokenizer.decode(out.sequences[0, ids.shape[1]:], skip_special_tokens=True))
    return texts


def engine_config(schedule: str, checkpoint) -> dict:
    if schedule == "chunked":  # prompts split into 8-token chunks
        return {"state_manager": {"max_ragged_batch_size": 8, "max_ragged_sequence_count": 8}}
    if schedule == "preempted":  # a KV cache too small for the batch: sequences are preempted and recomputed
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        needs = [-(-(len(tokenizer(p)["input_ids"]) + NEW_TOKENS) // BLOCK_SIZE) for p in PROMPTS]
        blocks = max(needs) * 3 // 2  # room for the longest alone, not for all at once
        assert sum(needs) > blocks
        return {"state_manager": {"kv_block_size": BLOCK_SIZE, "memory_config": {"mode": "allocate", "size": blocks}}}
    return {}


@pytest.mark.parametrize("schedule", ["one step", "chunked", "preempted"])
def test_greedy_matches_transformers(checkpoint, references, schedule):
    import mii_core

    pipe = mii_core.pipeline(str(checkpoint), inference_engine_config=engine_config(schedule, checkpoint))
    try:
        responses = pipe(PROMPTS, do_sample=False, max_new_tokens=NEW_TOKENS, ignore_eos=True)
    finally:
        pipe.destroy()
    assert [r.generated_text for r in responses] == references


def test_hub_names_without_transformer_prefix(checkpoint, references, tmp_path):
    """The original gpt2 files on the hub name tensors "h.0.attn.c_attn.weight": checkpoint_prefix."""
    import mii_core

    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((checkpoint / name).read_bytes())
    tensors = load_file(checkpoint / "model.safetensors")
    save_file({n.removeprefix("transformer."): t for n, t in tensors.items()}, tmp_path / "model.safetensors")
    assert "h.0.attn.c_attn.weight" in load_file(tmp_path / "model.safetensors")
    pipe = mii_core.pipeline(str(tmp_path))
    try:
        responses = pipe(PROMPTS, do_sample=False, max_new_tokens=NEW_TOKENS, ignore_eos=True)
    finally:
        pipe.destroy()
    assert [r.generated_text for r in responses] == references
