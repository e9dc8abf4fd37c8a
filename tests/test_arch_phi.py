"""Phi (mii-plugin-phi) against HF transformers: Phi-2's partial rotary, parallel block, biased LM head."""
import pytest
from transformers import PhiConfig, PhiForCausalLM

from support.checkpoint_edits import REMOVE, edit_config
from support.family_parity import (SCHEDULES, TinyFamily, assert_config_refused, assert_greedy_matches_hf,
                                   missing_field_cases)

FAMILY_MODEL, FAMILY_CONFIG = PhiForCausalLM, PhiConfig
SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             max_position_embeddings=256, initializer_range=0.15)
VARIANTS = {
    # Phi-2: rotary on 40% of each 16-wide head (6 features), the rest position-free
    "phi2": dict(partial_rotary_factor=0.4),
    # grouped KV heads, which HF's Phi also reads (num_key_value_heads), and HF's default factor 0.5
    "gqa": dict(num_key_value_heads=2),
}
SEEDS = {"phi2": 1, "gqa": 1}  # clear greedy margins, varied references


def tiny_family(mktemp) -> TinyFamily:
    return TinyFamily(mktemp, FAMILY_MODEL, FAMILY_CONFIG, SHAPE, VARIANTS, SEEDS)


@pytest.fixture(scope="module")
def phi(tmp_path_factory):
    return tiny_family(tmp_path_factory.mktemp)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_phi2_greedy_matches_hf(phi, oracle, pipeline, schedule):
    assert_greedy_matches_hf(pipeline, oracle, phi.path("phi2"), schedule)


def test_grouped_kv_heads_match_hf(phi, oracle, pipeline):
    assert_greedy_matches_hf(pipeline, oracle, phi.path("gqa"))


def test_hub_style_config_matches_hf(phi, oracle, pipeline, tmp_path):
    """microsoft/phi-2's config.json keeps partial_rotary_factor and rope_theta at the top level (transformers
    v5 writes them inside rope_parameters)."""
    hub_style = edit_config(phi.path("phi2"), tmp_path / "hub-style", rope_parameters=REMOVE,
                            partial_rotary_factor=0.4, rope_theta=10000.0)
    assert_greedy_matches_hf(pipeline, oracle, hub_style)


# config.json edits that must be refused, and what the error must name (both lookaheads must match)
BAD_CONFIGS = {
    "qk-layernorm": (dict(qk_layernorm=True), r"(?=.*qk_layernorm)(?=.*\bphi\b)"),
    **missing_field_cases("hidden_size", "intermediate_size"),
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_bad_config_is_a_clear_error(phi, tmp_path, case):
    assert_config_refused(phi.path("phi2"), tmp_path, *BAD_CONFIGS[case])
