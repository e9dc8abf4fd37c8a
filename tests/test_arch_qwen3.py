"""Qwen3 (mii-plugin-qwen3): an RMSNorm on every query and key head before rotary, GQA, head_dim wider
than hidden / heads, no q/k/v bias, and Qwen2's sliding-window flags."""
import pytest
from transformers import Qwen3Config, Qwen3ForCausalLM

from support.family_parity import (SCHEDULES, TinyFamily, assert_config_refused, assert_greedy_matches_hf,
                                   assert_last_logits_close, missing_field_cases)

WINDOW = 16
SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             head_dim=32, max_position_embeddings=512, rms_norm_eps=1e-6)
VARIANTS = {
    # head_dim 32 (hidden / heads is 16), as Qwen3's configs set it apart from the hidden size
    "gqa": dict(tie_word_embeddings=False, initializer_range=0.15),
    # tied embeddings (the small Qwen3s); layer 0 full, layer 1 sliding
    "tied-window": dict(tie_word_embeddings=True, initializer_range=0.3, use_sliding_window=True,
                        sliding_window=WINDOW, max_window_layers=1),
}
SEEDS = {"gqa": 2, "tied-window": 1}  # clear greedy margins, varied references
# every norm, q_norm and k_norm included, is randomised by TinyFamily: one loaded in the wrong place or
# dropped changes the tokens


def tiny_family(mktemp) -> TinyFamily:
    return TinyFamily(mktemp, Qwen3ForCausalLM, Qwen3Config, SHAPE, VARIANTS, SEEDS)


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory):
    return tiny_family(tmp_path_factory.mktemp)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_qk_norm_gqa_matches_hf(qwen3, oracle, pipeline, schedule):
    assert_greedy_matches_hf(pipeline, oracle, qwen3.path("gqa"), schedule)


def test_tied_with_sliding_top_layer_past_the_window_matches_hf(qwen3, oracle, pipeline):
    assert_greedy_matches_hf(pipeline, oracle, qwen3.path("tied-window"), new_tokens=48)


def test_last_token_logits_close_to_hf(qwen3, oracle, pipeline):
    assert_last_logits_close(pipeline, oracle, qwen3.path("gqa"))


BAD_CONFIGS = {
    "sliding-without-window": ({"use_sliding_window": False, "layer_types": ["full_attention", "sliding_attention"]},
                               r"qwen3.*sliding_attention.*no window"),
    "yarn-unsupported": ({"rope_parameters": {"rope_type": "longrope", "rope_theta": 1e6}}, r"qwen3.*longrope"),
    **missing_field_cases("hidden_size", "num_attention_heads"),
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_bad_config_is_named(qwen3, tmp_path, case):
    assert_config_refused(qwen3.path("gqa"), tmp_path, *BAD_CONFIGS[case])
