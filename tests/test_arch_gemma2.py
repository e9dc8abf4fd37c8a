"""Gemma 2 (mii-plugin-gemma2) against HF transformers: Gemma's scaled embeddings, (1 + w) norms and tanh
GeGLU, plus norms after attention and MLP, attention- and final-logit soft-capping, the query scale from
query_pre_attn_scalar, and a sliding window on every other layer."""
import pytest
from transformers import Gemma2Config, Gemma2ForCausalLM

from support.family_parity import (SCHEDULES, TinyFamily, assert_config_refused, assert_greedy_matches_hf,
                                   assert_last_logits_close, missing_field_cases)

WINDOW = 16
SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             head_dim=32, max_position_embeddings=512, rms_norm_eps=1e-6, sliding_window=WINDOW,
             query_pre_attn_scalar=24)  # a query scale apart from head_dim ** -0.5
VARIANTS = {
    # layer 0 sliding, layer 1 full (HF's default layer_types); HF's caps. Untied: tiny tied Gemma-2s
    # repeat one token whatever the seed or init (tying itself is Gemma's test's and the core's)
    "window": dict(attn_logit_softcapping=50.0, final_logit_softcapping=30.0, tie_word_embeddings=False,
                   initializer_range=0.15),
    # caps tight enough to change the scores and logits: one left out changes the output
    "tight-caps": dict(attn_logit_softcapping=1.0, final_logit_softcapping=20.0, tie_word_embeddings=False,
                       initializer_range=0.3),
}
SEEDS = {"window": 1, "tight-caps": 0}  # clear greedy margins, varied references
LONG_NEW_TOKENS = 48  # every sequence runs past the window


def tiny_family(mktemp) -> TinyFamily:
    return TinyFamily(mktemp, Gemma2ForCausalLM, Gemma2Config, SHAPE, VARIANTS, SEEDS)


@pytest.fixture(scope="module")
def gemma2(tmp_path_factory):
    return tiny_family(tmp_path_factory.mktemp)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_alternating_window_greedy_matches_hf(gemma2, oracle, pipeline, schedule):
    assert_greedy_matches_hf(pipeline, oracle, gemma2.path("window"), schedule, new_tokens=LONG_NEW_TOKENS,
                             cache_blocks=64)


def test_tight_softcaps_greedy_matches_hf(gemma2, oracle, pipeline):
    assert_greedy_matches_hf(pipeline, oracle, gemma2.path("tight-caps"))


@pytest.mark.parametrize("variant", ["window", "tight-caps"])
def test_last_token_logits_close_to_hf(gemma2, oracle, pipeline, variant):
    """70 tokens: past the window of layer 0, so the per-layer windows count too."""
    assert_last_logits_close(pipeline, oracle, gemma2.path(variant), length=70)


BAD_CONFIGS = {
    "bidirectional": (dict(use_bidirectional_attention=True), r"(?=.*gemma2)(?=.*use_bidirectional_attention)"),
    "activation": (dict(hidden_activation="tanh"), r"(?=.*gemma2)(?=.*hidden_activation 'tanh')"),
    "no-window": (dict(sliding_window=None), r"(?=.*gemma2)(?=.*sliding_attention)(?=.*sliding_window null)"),
    "layer-types": (dict(layer_types=["full_attention"]), r"(?=.*gemma2)(?=.*layer_types)"),
    **missing_field_cases("hidden_size", "num_attention_heads"),
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_bad_config_is_named(gemma2, tmp_path, case):
    assert_config_refused(gemma2.path("window"), tmp_path, *BAD_CONFIGS[case])


def test_caps_left_out_of_the_config_take_hfs_defaults(gemma2, oracle, pipeline, tmp_path):
    """A config.json without the soft-capping keys: Gemma2Config's defaults (50 for attention, 30 for the
    final logits) apply, in HF and here; without them the last logits differ by far more than 1e-4."""
    import json
    import shutil

    stripped = tmp_path / "gemma2-default-caps"
    shutil.copytree(gemma2.path("tight-caps"), stripped)
    config = json.loads((stripped / "config.json").read_text())
    for key in ("attn_logit_softcapping", "final_logit_softcapping"):
        config.pop(key)
    (stripped / "config.json").write_text(json.dumps(config))
    assert_last_logits_close(pipeline, oracle, stripped, length=70)
