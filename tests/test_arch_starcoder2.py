"""StarCoder2 (mii-plugin-starcoder2) against HF transformers' Starcoder2ForCausalLM: grouped-query attention,
biased LayerNorms, a plain biased c_fc → GELU → c_proj MLP, rotary; a sliding window (every layer, run well
past it, KV blocks behind it freed) or full attention; ``use_bias`` false (no projection biases) with an
untied head."""
import pytest
from transformers import Starcoder2Config, Starcoder2ForCausalLM

from support.checkpoint_edits import REMOVE, edit_config
from support.family_parity import (SCHEDULES, TinyFamily, assert_config_refused, assert_greedy_matches_hf,
                                   assert_last_logits_close, assert_prefix_cached_matches_hf, missing_field_cases)

WINDOW = 16
WINDOW_NEW_TOKENS = 48  # prompts of 2 to 81 tokens: every sequence runs well past the window
WINDOW_CACHE_BLOCKS = 10  # 10 blocks of 4 hold two windows, never the batch
SHAPE = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=512)
VARIANTS = {
    # starcoder2-3b/7b/15b: GQA, biases everywhere, a sliding window, tied head
    "window": dict(sliding_window=WINDOW, use_bias=True, initializer_range=0.3),
    # full attention, no projection biases, untied head, another rope base
    "no-bias": dict(sliding_window=None, use_bias=False, tie_word_embeddings=False, initializer_range=0.15,
                    rope_parameters={"rope_type": "default", "rope_theta": 1000.0}),
}
SEEDS = {"window": 4, "no-bias": 1}  # clear greedy margins, varied references


def tiny_family(mktemp) -> TinyFamily:
    return TinyFamily(mktemp, Starcoder2ForCausalLM, Starcoder2Config, SHAPE, VARIANTS, SEEDS)


@pytest.fixture(scope="module")
def starcoder2(tmp_path_factory):
    return tiny_family(tmp_path_factory.mktemp)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_past_the_window_matches_hf(starcoder2, oracle, pipeline, schedule):
    assert_greedy_matches_hf(pipeline, oracle, starcoder2.path("window"), schedule, new_tokens=WINDOW_NEW_TOKENS,
                             cache_blocks=WINDOW_CACHE_BLOCKS)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_without_biases_matches_hf(starcoder2, oracle, pipeline, schedule):
    assert_greedy_matches_hf(pipeline, oracle, starcoder2.path("no-bias"), schedule)


def test_prefix_cached_matches_hf(starcoder2, oracle, pipeline):
    """The windowed variant has no prefix cache (its blocks are freed behind the window)."""
    assert_prefix_cached_matches_hf(pipeline, oracle, starcoder2.path("no-bias"))


def test_hub_style_config_matches_hf(starcoder2, oracle, pipeline, tmp_path):
    """bigcode/starcoder2-* config.json files keep rope_theta at the top level (transformers v5 writes
    rope_parameters) and carry norm_type / mlp_type, which HF reads nowhere."""
    hub_style = edit_config(starcoder2.path("no-bias"), tmp_path / "hub-style", rope_parameters=REMOVE,
                            rope_theta=1000.0, norm_type="layer_norm", mlp_type="default")
    assert_greedy_matches_hf(pipeline, oracle, hub_style, reference_path=starcoder2.path("no-bias"))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_last_token_logits_close_to_hf(starcoder2, oracle, pipeline, variant):
    assert_last_logits_close(pipeline, oracle, starcoder2.path(variant))


BAD_CONFIGS = {
    "activation": (dict(hidden_act="tanh"), r"(?=.*starcoder2)(?=.*hidden_act 'tanh')"),
    "rope": (dict(rope_parameters={"rope_type": "longrope", "rope_theta": 1e4}), r"(?=.*starcoder2)(?=.*longrope)"),
    **missing_field_cases("hidden_size", "intermediate_size", "num_attention_heads"),
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_bad_config_is_named(starcoder2, tmp_path, case):
    assert_config_refused(starcoder2.path("window"), tmp_path, *BAD_CONFIGS[case])
