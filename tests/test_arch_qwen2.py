"""Qwen2 (mii-plugin-qwen2): q/k/v biases, GQA, tied embeddings, and HF's sliding-window flags, which
give the layers from max_window_layers on a window and leave the others full."""
import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

from support.checkpoint_edits import REMOVE
from support.family_parity import SCHEDULES, TinyFamily, assert_config_refused, assert_greedy_matches_hf

WINDOW = 16
NEW_TOKENS = 24
WINDOW_NEW_TOKENS = 48  # every long sequence runs well past the window
LOGITS_TOLERANCE = 1e-4
SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             max_position_embeddings=512, rms_norm_eps=1e-6)
# A tied model's inputs are its loud LM head, so its layers need a larger init to matter (as for tiny Llama)
VARIANTS = {
    "tied": dict(tie_word_embeddings=True, initializer_range=0.3),
    # layer 0 full, layer 1 sliding
    "window": dict(tie_word_embeddings=False, initializer_range=0.15, use_sliding_window=True,
                   sliding_window=WINDOW, max_window_layers=1),
}
SEEDS = {"tied": 1, "window": 3}  # every greedy reference clear of near-ties
# HF initialises biases to zero, which would hide a bias the engine drops: TinyFamily randomises them; the
# norms stay as HF writes them (the seeds were chosen for that)


def tiny_family(mktemp) -> TinyFamily:
    return TinyFamily(mktemp, Qwen2ForCausalLM, Qwen2Config, SHAPE, VARIANTS, SEEDS, randomize_norms=False)


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory):
    return tiny_family(tmp_path_factory.mktemp).path


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_tied_gqa_with_biases_matches_hf(qwen2, oracle, pipeline, schedule):
    # 48 blocks of 4: the longest sequence (32 blocks) fits alone, the batch (~93) does not. (In a qwen2
    # folder transformers tokenizes with Qwen2Tokenizer: the prompts run 3 to 102 tokens here)
    assert_greedy_matches_hf(pipeline, oracle, qwen2("tied"), schedule, new_tokens=NEW_TOKENS, cache_blocks=48)


@pytest.mark.parametrize("schedule", ["whole", "preempted"])
def test_sliding_top_layers_past_the_window_match_hf(qwen2, oracle, pipeline, schedule):
    # 56 blocks: the longest sequence (38 blocks, all kept: layer 0 sees everything) fits alone
    pipe = assert_greedy_matches_hf(pipeline, oracle, qwen2("window"), schedule, new_tokens=WINDOW_NEW_TOKENS,
                                    cache_blocks=56)
    assert pipe.engine.scheduler.kv.window is None, "a full-attention layer reads every key: no block may be freed"


def test_each_layer_gets_its_own_window(qwen2, oracle, pipeline):
    """On a 70-token input, HF with the window on every layer or on none gives other logits than with
    the checkpoint's per-layer windows; the engine gives the latter."""
    path = qwen2("window")
    ids = torch.randint(3, 400, (70,), generator=torch.Generator().manual_seed(0)).tolist()
    expected = oracle(path).last_logits(ids)
    for layer_types in (["full_attention"] * 2, ["sliding_attention"] * 2):
        other = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, layer_types=layer_types).eval()
        with torch.no_grad():
            assert (other(torch.tensor([ids])).logits[0, -1] - expected).abs().max() > 0.1, layer_types
    engine = pipeline(path).engine
    try:
        torch.testing.assert_close(engine.put([950], [ids])[0], expected, atol=LOGITS_TOLERANCE, rtol=0)
    finally:
        engine.flush(950)


SLIDING_FLAGS = [
    dict(use_sliding_window=False, sliding_window=32768, max_window_layers=28),  # Qwen2-7B's config.json
    dict(use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1),
    dict(use_sliding_window=True, sliding_window=WINDOW, max_window_layers=0),
    dict(use_sliding_window=True, sliding_window=WINDOW, max_window_layers=28),
    dict(use_sliding_window=True, sliding_window=WINDOW, layer_types=["sliding_attention", "full_attention"]),
]


@pytest.mark.parametrize("flags", SLIDING_FLAGS)
def test_layer_windows_follow_hf_config(flags):
    """Each layer's window as HF's Qwen2Attention reads it from Qwen2Config, from the raw config.json
    fields and from the config HF writes back (with layer_types filled in)."""
    from mii_plugin_qwen2.policy import Qwen2Policy

    hf_config = Qwen2Config(**SHAPE, vocab_size=400, **flags)
    expected = tuple(hf_config.sliding_window if kind == "sliding_attention" else None
                     for kind in hf_config.layer_types)
    raw = {**SHAPE, "vocab_size": 400, "model_type": "qwen2", **flags}
    for fields in (raw, hf_config.to_dict()):
        spec = Qwen2Policy(fields).spec
        assert tuple(spec.window_of(i) for i in range(spec.num_layers)) == expected
    assert spec.kv_window == (None if None in expected else WINDOW)


@pytest.mark.parametrize("changes, match", [
    ({"hidden_size": REMOVE}, r"config\.json.*hidden_size"),
    ({"use_sliding_window": False}, r"qwen2.*sliding_attention.*no window"),
    ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e6,
                          "original_max_position_embeddings": 32768}}, r"qwen2.*yarn"),
])
def test_bad_config_is_named(qwen2, tmp_path, changes, match):
    assert_config_refused(qwen2("window"), tmp_path, changes, match)
