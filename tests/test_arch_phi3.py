"""Phi-3 (mii-plugin-phi3) against HF transformers: fused qkv_proj and gate_up_proj, RMSNorm, GQA, the
sliding window of Phi-3-mini-4k, and LongRoPE (Phi-3-128k, Phi-3.5): short factors for sequences within
original_max_position_embeddings, long factors past it, chosen as HF's forward chooses them (a whole prompt
one set, each decode step its own), with partial rotary (Phi-4-mini's partial_rotary_factor)."""
import pytest
from transformers import Phi3Config, Phi3ForCausalLM

from support.checkpoint_edits import REMOVE, edit_config
from support.family_parity import (SCHEDULES, TinyFamily, assert_config_refused, assert_greedy_matches_hf,
                                   assert_last_logits_close, assert_prefix_cached_matches_hf, missing_field_cases)

# the mixed prompts are 2, 4, 16, 32, 47 and 81 tokens: with 20 new tokens the five short ones stay within
# 72 positions (short factors throughout) and the longest starts past it (long factors throughout)
ORIGINAL_MAX = 72
CROSSING_MAX = 40
WINDOW = 16
SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             max_position_embeddings=4 * ORIGINAL_MAX, original_max_position_embeddings=ORIGINAL_MAX)


def longrope(rotary_dims: int) -> dict:
    """Short factors near 1, long ones far from them: the wrong choice changes the output."""
    half = rotary_dims // 2
    return {"rope_type": "longrope", "rope_theta": 10000.0, "short_factor": [1.0 + 0.05 * i for i in range(half)],
            "long_factor": [1.0 + 1.5 * i for i in range(half)]}


VARIANTS = {
    # Phi-3-mini-4k: default rope, a sliding window on every layer
    "4k-window": dict(sliding_window=WINDOW, initializer_range=0.15),
    # Phi-3-mini-128k / Phi-3.5-mini: LongRoPE over the whole 16-wide head
    "longrope": dict(rope_parameters=longrope(16), initializer_range=0.15),
    # Phi-4-mini: LongRoPE on the first 12 of 16 features (partial_rotary_factor 0.75)
    "longrope-partial": dict(rope_parameters={**longrope(12), "partial_rotary_factor": 0.75}, initializer_range=0.15),
}
SEEDS = {"4k-window": 0, "longrope": 0, "longrope-partial": 0}
WINDOW_NEW_TOKENS = 48  # every sequence runs past the window


def tiny_family(mktemp) -> TinyFamily:
    return TinyFamily(mktemp, Phi3ForCausalLM, Phi3Config, SHAPE, VARIANTS, SEEDS)


@pytest.fixture(scope="module")
def phi3(tmp_path_factory):
    return tiny_family(tmp_path_factory.mktemp)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_longrope_greedy_matches_hf(phi3, oracle, pipeline, schedule):
    assert_greedy_matches_hf(pipeline, oracle, phi3.path("longrope"), schedule)


@pytest.fixture(scope="module")
def crossing(phi3, tmp_path_factory):
    """The longrope checkpoint with original_max_position_embeddings 40: the 32-token prompt's generation
    crosses it (HF then recomputes the whole cache with the long factors), the 47- and 81-token prompts
    start past it and the others stay within it."""
    return edit_config(phi3.path("longrope"), tmp_path_factory.mktemp("phi3-crossing") / "crossing",
                       original_max_position_embeddings=CROSSING_MAX)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_generation_crossing_the_original_context_matches_hf(crossing, oracle, pipeline, schedule):
    pipe = assert_greedy_matches_hf(pipeline, oracle, crossing, schedule)
    assert pipe.loop.scheduler.num_restarts > 0, "no sequence was recomputed at the crossing"


def test_generation_crossing_prefix_cached_matches_hf(crossing, oracle, pipeline):
    assert_prefix_cached_matches_hf(pipeline, oracle, crossing)


def test_longrope_prefix_cached_matches_hf(phi3, oracle, pipeline):
    assert_prefix_cached_matches_hf(pipeline, oracle, phi3.path("longrope"))


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_partial_longrope_greedy_matches_hf(phi3, oracle, pipeline, schedule):
    assert_greedy_matches_hf(pipeline, oracle, phi3.path("longrope-partial"), schedule)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_sliding_window_greedy_matches_hf(phi3, oracle, pipeline, schedule):
    assert_greedy_matches_hf(pipeline, oracle, phi3.path("4k-window"), schedule, new_tokens=WINDOW_NEW_TOKENS,
                             cache_blocks=10)


@pytest.mark.parametrize("rope_type", ["longrope", "su"])
def test_hub_style_config_matches_hf(phi3, oracle, pipeline, tmp_path, rope_type):
    """Phi-3-mini-128k's config.json: ``rope_scaling`` with "type" (its first revision said "su", which
    transformers v5 reads only with original_max_position_embeddings inside it too), ``rope_theta`` at the top."""
    rope = longrope(16)
    scaling = {"type": rope_type, "short_factor": rope["short_factor"], "long_factor": rope["long_factor"]}
    if rope_type == "su":
        scaling["original_max_position_embeddings"] = ORIGINAL_MAX
    hub_style = edit_config(phi3.path("longrope"), tmp_path / "hub-style", rope_parameters=REMOVE, rope_theta=10000.0,
                            rope_scaling=scaling)
    assert_greedy_matches_hf(pipeline, oracle, hub_style)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("length", [40, ORIGINAL_MAX + 8])
def test_last_token_logits_close_to_hf(phi3, oracle, pipeline, variant, length):
    """Within and past original_max_position_embeddings (and past the window)."""
    assert_last_logits_close(pipeline, oracle, phi3.path(variant), length=length)


BAD_CONFIGS = {
    "rope-type": (dict(rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}),
                  r"(?=.*phi3)(?=.*rope type 'dynamic')"),
    "short-factor": (dict(rope_parameters={**longrope(16), "short_factor": [1.0, 2.0]}),
                     r"(?=.*phi3)(?=.*short_factor)(?=.*8 numbers)"),
    "no-long-factor": (dict(rope_parameters={**longrope(16), "long_factor": None}), r"(?=.*phi3)(?=.*long_factor)"),
    "activation": (dict(hidden_act="tanh"), r"(?=.*phi3)(?=.*hidden_act 'tanh')"),
    **missing_field_cases("hidden_size", "intermediate_size"),
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_bad_config_is_named(phi3, tmp_path, case):
    assert_config_refused(phi3.path("longrope"), tmp_path, *BAD_CONFIGS[case])
