"""Qwen (v1), model_type "qwen": greedy parity with HF Qwen2 on the same weights converted to the v1 layout
(transformers has no Qwen v1), and Qwen's long-context rules (dynamic NTK, logn attention) against a
hand-written PyTorch Qwen v1 past ``seq_length``. The tiktoken tokenizer is in test_arch_qwen_tokenizer.py."""

import json
import math

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from support.compare import assert_responses_match
from support.oracle import MIN_GREEDY_MARGIN, HFOracle
from support.prompts import MIXED_PROMPTS
from support.qwen_reference import QwenV1Reference, get_ntk_alpha, rotary_tables
from support.qwen_v1 import build_tiny_qwen2, convert_to_qwen_v1
from test_scheduling import BLOCK_SIZE, tight_kv_config

NEW_TOKENS = 20
SEED = 0
SHORT_SEQ_LENGTH = 8  # Qwen's trained length in the long-context tests: the prompts run far past it
LOGITS_TOLERANCE = 1e-4
SCHEDULES = {
    "one_step": {},
    "chunked": {"state_manager": {"max_ragged_batch_size": 8, "max_ragged_sequence_count": 8}},
}


def hf_oracle(path) -> HFOracle:
    """HF Qwen2 on the original folder. Its tokenizer is loaded as the generic fast tokenizer: for a
    qwen2 folder transformers v5's AutoTokenizer rebuilds Qwen2's own pre-tokenizer around the shared
    test vocabulary, which is not the tokenizer the folder holds (nor the one our pipeline loads)."""
    oracle = HFOracle(path)
    oracle.tokenizer = PreTrainedTokenizerFast.from_pretrained(str(path))
    return oracle


@pytest.fixture(scope="module")
def qwen2_folder(tmp_path_factory):
    return build_tiny_qwen2(tmp_path_factory.mktemp("qwen2"), seed=SEED)


@pytest.fixture(scope="module")
def hf(qwen2_folder):
    return hf_oracle(qwen2_folder)


@pytest.fixture(scope="module")
def v1_folder(qwen2_folder, tmp_path_factory):
    """As real Qwen configs: NTK and logn on, with a seq_length no test prompt reaches."""
    return convert_to_qwen_v1(qwen2_folder, tmp_path_factory.mktemp("qwen-v1"), seq_length=2048)


@pytest.fixture(scope="module")
def convert(qwen2_folder, tmp_path_factory):
    made = {}

    def get(**options):
        key = tuple(sorted(options.items()))
        if key not in made:
            made[key] = convert_to_qwen_v1(qwen2_folder, tmp_path_factory.mktemp("qwen-v1-long"), **options)
        return made[key]

    return get


def test_v1_layout_holds_fused_qkv_and_w1_w2(v1_folder):
    """The fixture is what a QWenLMHeadModel checkpoint holds (so the parity below tests the v1 mapping)."""
    from safetensors import safe_open

    with safe_open(str(v1_folder / "model.safetensors"), framework="pt") as handle:
        shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    assert shapes["transformer.h.0.attn.c_attn.weight"] == (3 * 64, 64)
    assert shapes["transformer.h.0.attn.c_attn.bias"] == (3 * 64,)
    assert shapes["transformer.h.1.mlp.w1.weight"] == shapes["transformer.h.1.mlp.w2.weight"] == (128, 64)
    assert not any(name.startswith("model.") for name in shapes)
    config = json.loads((v1_folder / "config.json").read_text())
    assert (config["model_type"], config["intermediate_size"], config["kv_channels"]) == ("qwen", 256, 16)


@pytest.mark.parametrize("schedule", ["one_step", "chunked", "preempted"])
def test_mixed_batch_greedy_matches_hf_qwen2(v1_folder, hf, qwen2_folder, pipeline, schedule):
    references = [hf.greedy(p, NEW_TOKENS, ignore_eos=True) for p in MIXED_PROMPTS]
    if schedule == "preempted":
        config, n_blocks = tight_kv_config(lambda _path: hf, qwen2_folder, MIXED_PROMPTS, NEW_TOKENS)
        needed = sum(math.ceil((g.prompt_length + NEW_TOKENS) / BLOCK_SIZE) for g in references)
        assert needed > n_blocks, "the batch must not fit in the KV cache at once"
    else:
        config = SCHEDULES[schedule]
    pipe = pipeline(v1_folder, inference_engine_config=config)
    responses = pipe(MIXED_PROMPTS, do_sample=False, max_new_tokens=NEW_TOKENS, ignore_eos=True)
    assert_responses_match(responses, references)


def test_qwen_dynamic_rope_tables_follow_qwens_formula():
    """Per token: Qwen's RotaryEmbedding tables for the alpha of length position + 1, across the steps."""
    from mii_core.model.rotary import RotaryEmbedding
    from mii_core.model.spec import RopeSpec

    trained, dim, theta = 16, 12, 10000.0
    spec = RopeSpec(theta=theta, rope_type="qwen_dynamic", params={"original_max_position_embeddings": trained})
    positions = torch.tensor([0, 7, 14, 15, 16, 17, 31, 32, 33, 63, 64, 100, 255, 256, 1000])
    cos, sin = RotaryEmbedding(spec, dim, 4096, torch.device("cpu")).cos_sin(positions, torch.float32)
    alphas = [get_ntk_alpha(int(p) + 1, trained) for p in positions]
    assert alphas == [1, 1, 1, 1, 3, 3, 3, 7, 7, 7, 15, 15, 31, 63, 127], "worked by hand: 2^ceil(log2(L/16)+1)-1"
    for row, (p, alpha) in enumerate(zip(positions.tolist(), alphas)):
        want_cos, want_sin = rotary_tables(dim, theta, p + 1, alpha)
        torch.testing.assert_close(cos[row], want_cos[p], atol=2e-6, rtol=0)
        torch.testing.assert_close(sin[row], want_sin[p], atol=2e-6, rtol=0)


LONG_VARIANTS = {
    "ntk+logn": dict(use_dynamic_ntk=True, use_logn_attn=True),
    "ntk": dict(use_dynamic_ntk=True, use_logn_attn=False),
    "logn": dict(use_dynamic_ntk=False, use_logn_attn=True),
    "ntk+logn, rotary_pct 0.5": dict(use_dynamic_ntk=True, use_logn_attn=True, rotary_pct=0.5),
}


@pytest.mark.parametrize("variant", list(LONG_VARIANTS))
def test_past_seq_length_logits_match_qwen_reference(convert, hf, pipeline, variant):
    """Chunks of a 81-token prompt (alpha 1, 3, 7, 15, 31; logn up to log_8(81)) against the reference;
    the reference itself agrees with HF Qwen2 up to seq_length and not after (so the flags are live)."""
    folder = convert(seq_length=SHORT_SEQ_LENGTH, **LONG_VARIANTS[variant])
    ids = hf.encode(MIXED_PROMPTS[5])
    reference = QwenV1Reference(folder).logits(ids)
    if "rotary_pct" not in LONG_VARIANTS[variant]:
        with torch.no_grad():
            plain = hf.model(torch.tensor([ids])).logits[0]
        torch.testing.assert_close(reference[:SHORT_SEQ_LENGTH], plain[:SHORT_SEQ_LENGTH], atol=LOGITS_TOLERANCE, rtol=0)
        assert (reference[SHORT_SEQ_LENGTH:] - plain[SHORT_SEQ_LENGTH:]).abs().amax(-1).min() > 0.01
    engine = pipeline(folder).engine
    ends = [5, 30, 31, 55, len(ids)]
    try:
        for start, end in zip([0] + ends, ends):
            logits = engine.put([7], [ids[start:end]])
            torch.testing.assert_close(logits[0], reference[end - 1], atol=LOGITS_TOLERANCE, rtol=0)
    finally:
        engine.flush(7)


@pytest.mark.parametrize("schedule", ["chunked", "preempted"])
def test_past_seq_length_greedy_matches_qwen_reference(convert, hf, qwen2_folder, pipeline, schedule):
    folder = convert(seq_length=SHORT_SEQ_LENGTH, use_dynamic_ntk=True, use_logn_attn=True)
    reference = QwenV1Reference(folder)
    prompts = MIXED_PROMPTS[2:]
    expected = []
    for prompt in prompts:
        ids = hf.encode(prompt)
        generated = reference.greedy(ids, NEW_TOKENS)
        expected.append(generated)
        _check_margins(reference, ids, generated)
    if schedule == "preempted":
        config, n_blocks = tight_kv_config(lambda _path: hf, qwen2_folder, prompts, NEW_TOKENS)
        needed = sum(math.ceil((len(hf.encode(p)) + NEW_TOKENS) / BLOCK_SIZE) for p in prompts)
        assert needed > n_blocks, "the batch must not fit in the KV cache at once"
    else:
        config = SCHEDULES[schedule]
    pipe = pipeline(folder, inference_engine_config=config)
    outputs = pipe.generate_tokens([hf.encode(p) for p in prompts], max_new_tokens=NEW_TOKENS,
                                   do_sample=False, ignore_eos=True)
    assert [list(o.token_ids) for o in outputs] == expected


def _check_margins(reference: QwenV1Reference, prompt_ids: list[int], generated: list[int]) -> None:
    logits = reference.logits(prompt_ids + generated[:-1])[len(prompt_ids) - 1:]
    top2 = logits.topk(2, dim=-1).values
    margin = (top2[:, 0] - top2[:, 1]).min().item()
    assert margin > MIN_GREEDY_MARGIN, f"fixture problem: reference near-tie (margin {margin:.1e})"


BAD_CONFIGS = {
    "quantization_config": ({"quantization_config": {"quant_method": "gptq", "bits": 4}}, "quantization_config"),
    "kv_channels": ({"kv_channels": 32}, "kv_channels"),
    "rotary_pct": ({"rotary_pct": 0.1}, "rotary_pct"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_unsupported_config_is_a_clear_error(v1_folder, tmp_path, case):
    import mii_core

    change, feature = BAD_CONFIGS[case]
    config = {**json.loads((v1_folder / "config.json").read_text()), **change}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"(?s)model_type 'qwen'.*{feature}.*not supported"):
        mii_core.pipeline(str(tmp_path))


@pytest.mark.parametrize("field", ["seq_length", "num_attention_heads"])
def test_missing_required_field_names_file_and_field(v1_folder, tmp_path, field):
    import mii_core

    config = json.loads((v1_folder / "config.json").read_text())
    del config[field]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"(?s)config\.json.*'{field}'"):
        mii_core.pipeline(str(tmp_path))
