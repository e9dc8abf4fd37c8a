"""Qwen3-MoE (mii-plugin-qwen3-moe) against HF transformers: an RMSNorm on each query and key head before
rotary, top-k routing over num_experts (renormalised with norm_topk_prob), no shared expert, dense and sparse
layers mixed (mlp_only_layers, decoder_sparse_step), attention_bias, and a window on every layer when
use_sliding_window."""
import pytest
from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

from support.checkpoint_edits import REMOVE, edit_config
from support.family_parity import (SCHEDULES, TinyFamily, assert_config_refused, assert_greedy_matches_hf,
                                   assert_last_logits_close, assert_prefix_cached_matches_hf, missing_field_cases)

EXPERTS, TOP_K = 8, 2
WINDOW_NEW_TOKENS = 48
SHAPE = dict(hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=3,
             num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=512,
             num_experts=EXPERTS, num_experts_per_tok=TOP_K, initializer_range=0.15)
VARIANTS = {
    # Qwen3-30B-A3B's routing (norm_topk_prob), layer 0 dense (mlp_only_layers), head_dim 32 ≠ 64 / 4
    "mixed": dict(mlp_only_layers=[0], norm_topk_prob=True),
    # every layer windowed, q/k/v/o biases, only layer 1 sparse, weights as softmaxed
    "window-bias": dict(use_sliding_window=True, sliding_window=16, attention_bias=True, decoder_sparse_step=2),
}
SEEDS = {"mixed": 0, "window-bias": 1}  # clear greedy margins, varied references


def tiny_family(mktemp) -> TinyFamily:
    return TinyFamily(mktemp, Qwen3MoeForCausalLM, Qwen3MoeConfig, SHAPE, VARIANTS, SEEDS)


@pytest.fixture(scope="module")
def qwen3_moe(tmp_path_factory):
    return tiny_family(tmp_path_factory.mktemp)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_mixed_layers_greedy_matches_hf(qwen3_moe, oracle, pipeline, schedule):
    assert_greedy_matches_hf(pipeline, oracle, qwen3_moe.path("mixed"), schedule)


def test_mixed_layers_prefix_cached_matches_hf(qwen3_moe, oracle, pipeline):
    assert_prefix_cached_matches_hf(pipeline, oracle, qwen3_moe.path("mixed"))


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_window_and_biases_greedy_matches_hf(qwen3_moe, oracle, pipeline, schedule):
    assert_greedy_matches_hf(pipeline, oracle, qwen3_moe.path("window-bias"), schedule,
                             new_tokens=WINDOW_NEW_TOKENS, cache_blocks=10)


def test_hub_style_config_matches_hf(qwen3_moe, oracle, pipeline, tmp_path):
    """Qwen3-30B-A3B's config.json: num_experts (transformers v5 writes its alias num_local_experts), rope_theta
    at the top, max_window_layers (which Qwen3-MoE ignores), a sliding_window use_sliding_window false turns off."""
    hub_style = edit_config(qwen3_moe.path("mixed"), tmp_path / "hub-style", rope_parameters=REMOVE,
                            rope_theta=10000.0, max_window_layers=1, use_sliding_window=False, sliding_window=16,
                            num_local_experts=REMOVE, num_experts=EXPERTS)
    assert_greedy_matches_hf(pipeline, oracle, hub_style)


@pytest.mark.parametrize("variant", VARIANTS)
def test_last_token_logits_close_to_hf(qwen3_moe, oracle, pipeline, variant):
    assert_last_logits_close(pipeline, oracle, qwen3_moe.path(variant))


BAD_CONFIGS = {
    "top-k": (dict(num_experts_per_tok=0), r"(?=.*qwen3_moe)(?=.*num_experts_per_tok)"),
    "sparse-step": (dict(decoder_sparse_step=-1), r"(?=.*qwen3_moe)(?=.*decoder_sparse_step)"),
    "activation": (dict(hidden_act="relu"), r"(?=.*qwen3_moe)(?=.*hidden_act 'relu')"),
    "no-experts": (dict(num_local_experts=REMOVE), r"(?=.*config\.json)(?=.*num_experts)"),
    **missing_field_cases("num_experts_per_tok", "moe_intermediate_size"),
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_bad_config_is_named(qwen3_moe, tmp_path, case):
    assert_config_refused(qwen3_moe.path("mixed"), tmp_path, *BAD_CONFIGS[case])
