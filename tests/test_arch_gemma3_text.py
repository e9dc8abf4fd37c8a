"""Gemma 3's language model (mii-plugin-gemma3-text) against HF transformers: Gemma 2's scaled embeddings,
(1 + w) norms, tanh GeGLU and sandwich norms, plus (1 + w) RMSNorms on each query and key head, local
sliding-window layers and global ones (sliding_window_pattern / layer_types) with a rope base each
(rope_local_base_freq, rope_theta), rope scaling on the global layers, and an optional final-logit soft-cap."""
import pytest
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

from support.checkpoint_edits import REMOVE, edit_config
from support.family_parity import (SCHEDULES, TinyFamily, assert_config_refused, assert_greedy_matches_hf,
                                   assert_last_logits_close, assert_prefix_cached_matches_hf, missing_field_cases)

WINDOW = 16
WINDOW_NEW_TOKENS = 48  # every sequence runs past the window
SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
             head_dim=32, max_position_embeddings=512, rms_norm_eps=1e-6, sliding_window=WINDOW,
             query_pre_attn_scalar=24, tie_word_embeddings=False, initializer_range=0.15)
VARIANTS = {
    # Gemma 3 1B's layout: local layers 0 and 1, global layer 2 (every 3rd); HF's rope bases (1e6 / 1e4)
    "pattern": dict(sliding_window_pattern=3),
    # Gemma 3 4B+'s linear rope scaling on the global layers, a local base far from the default, q/k/v/o biases,
    # a final soft-cap tight enough to matter; layer types listed (global first)
    "scaled": dict(layer_types=["full_attention", "sliding_attention", "sliding_attention"],
                   rope_parameters={"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 10_000.0},
                                    "sliding_attention": {"rope_type": "default", "rope_theta": 100.0}},
                   attention_bias=True, final_logit_softcapping=15.0),
}
SEEDS = {"pattern": 0, "scaled": 1}  # clear greedy margins, varied references


def tiny_family(mktemp) -> TinyFamily:
    return TinyFamily(mktemp, Gemma3ForCausalLM, Gemma3TextConfig, SHAPE, VARIANTS, SEEDS)


@pytest.fixture(scope="module")
def gemma3(tmp_path_factory):
    return tiny_family(tmp_path_factory.mktemp)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_local_global_layers_greedy_matches_hf(gemma3, oracle, pipeline, schedule):
    assert_greedy_matches_hf(pipeline, oracle, gemma3.path("pattern"), schedule, new_tokens=WINDOW_NEW_TOKENS,
                             cache_blocks=64)


def test_local_global_layers_prefix_cached_matches_hf(gemma3, oracle, pipeline):
    assert_prefix_cached_matches_hf(pipeline, oracle, gemma3.path("pattern"))


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_scaled_global_rope_greedy_matches_hf(gemma3, oracle, pipeline, schedule):
    assert_greedy_matches_hf(pipeline, oracle, gemma3.path("scaled"), schedule)


def test_hub_style_config_matches_hf(gemma3, oracle, pipeline, tmp_path):
    """Gemma 3 4B's text config.json: rope_theta, rope_local_base_freq and rope_scaling at the top,
    sliding_window_pattern instead of layer_types."""
    hub_style = edit_config(gemma3.path("pattern"), tmp_path / "hub-style", rope_parameters=REMOVE, layer_types=REMOVE,
                            rope_theta=1_000_000.0, rope_local_base_freq=10_000.0, sliding_window_pattern=3,
                            rope_scaling={"rope_type": "linear", "factor": 8.0})
    assert_greedy_matches_hf(pipeline, oracle, hub_style)


@pytest.mark.parametrize("variant", VARIANTS)
def test_last_token_logits_close_to_hf(gemma3, oracle, pipeline, variant):
    """70 tokens: past the local layers' window."""
    assert_last_logits_close(pipeline, oracle, gemma3.path(variant), length=70)


BAD_CONFIGS = {
    "bidirectional": (dict(use_bidirectional_attention=True), r"(?=.*gemma3_text)(?=.*use_bidirectional_attention)"),
    "activation": (dict(hidden_activation="tanh"), r"(?=.*gemma3_text)(?=.*hidden_activation 'tanh')"),
    "layer-types": (dict(layer_types=["full_attention"]), r"(?=.*gemma3_text)(?=.*layer_types)"),
    "rope-keys": (dict(rope_parameters={"rope_type": "default", "rope_theta": 10_000.0}),
                  r"(?=.*gemma3_text)(?=.*rope_parameters)"),
    "local-rope": (dict(rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                                         "sliding_attention": {"rope_type": "yarn", "factor": 2.0, "rope_theta": 1e4}}),
                   r"(?=.*gemma3_text)(?=.*yarn)"),
    **missing_field_cases("hidden_size", "num_attention_heads"),
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_bad_config_is_named(gemma3, tmp_path, case):
    assert_config_refused(gemma3.path("pattern"), tmp_path, *BAD_CONFIGS[case])
