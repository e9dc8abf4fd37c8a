"""Qwen2-MoE (mii-plugin-qwen2-moe) against HF transformers: top-k routing over num_experts (renormalised only
with norm_topk_prob), a shared expert scaled by its sigmoid gate, dense and sparse layers mixed
(mlp_only_layers, decoder_sparse_step), q/k/v biases, GQA, and Qwen2-MoE's sliding-window layer types."""
import pytest
from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

from support.checkpoint_edits import REMOVE, edit_config
from support.family_parity import (SCHEDULES, TinyFamily, assert_config_refused, assert_greedy_matches_hf,
                                   assert_last_logits_close, assert_prefix_cached_matches_hf, missing_field_cases)
from support.moe_routing import expert_spread, recording_routing
from support.prompts import MIXED_PROMPTS

EXPERTS, TOP_K, LAYERS = 8, 2, 3
WINDOW_NEW_TOKENS = 48
SHAPE = dict(hidden_size=64, intermediate_size=96, moe_intermediate_size=32, shared_expert_intermediate_size=48,
             num_hidden_layers=LAYERS, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
             num_experts=EXPERTS, num_experts_per_tok=TOP_K, initializer_range=0.15)
VARIANTS = {
    # layer 1 dense (mlp_only_layers), layers 0 and 2 experts + shared expert; top-k weights as softmaxed
    "mixed": dict(mlp_only_layers=[1]),
    # only layer 1 sparse (every second layer), top-k weights renormalised
    "sparse-step": dict(decoder_sparse_step=2, norm_topk_prob=True),
    # use_sliding_window: layer 0 windowed (even layers below max_window_layers), 1 and 2 full
    "window": dict(use_sliding_window=True, sliding_window=16, max_window_layers=2),
}
SEEDS = {"mixed": 0, "sparse-step": 0, "window": 0}  # clear greedy margins, varied references


def tiny_family(mktemp) -> TinyFamily:
    return TinyFamily(mktemp, Qwen2MoeForCausalLM, Qwen2MoeConfig, SHAPE, VARIANTS, SEEDS)


@pytest.fixture(scope="module")
def qwen2_moe(tmp_path_factory):
    return tiny_family(tmp_path_factory.mktemp)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_mixed_layers_greedy_matches_hf(qwen2_moe, oracle, pipeline, schedule):
    assert_greedy_matches_hf(pipeline, oracle, qwen2_moe.path("mixed"), schedule)


def test_mixed_layers_prefix_cached_matches_hf(qwen2_moe, oracle, pipeline):
    assert_prefix_cached_matches_hf(pipeline, oracle, qwen2_moe.path("mixed"))


def test_sparse_step_renormalised_greedy_matches_hf(qwen2_moe, oracle, pipeline):
    assert_greedy_matches_hf(pipeline, oracle, qwen2_moe.path("sparse-step"))


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_sliding_window_layer_greedy_matches_hf(qwen2_moe, oracle, pipeline, schedule):
    assert_greedy_matches_hf(pipeline, oracle, qwen2_moe.path("window"), schedule, new_tokens=WINDOW_NEW_TOKENS)


def test_hub_style_config_matches_hf(qwen2_moe, oracle, pipeline, tmp_path):
    """Qwen1.5-MoE-A2.7B's config.json: no layer_types or qkv_bias (biases on), rope_theta at the top, a
    sliding_window that use_sliding_window false turns off."""
    hub_style = edit_config(qwen2_moe.path("mixed"), tmp_path / "hub-style", layer_types=REMOVE, qkv_bias=REMOVE,
                            rope_parameters=REMOVE, rope_theta=10000.0, sliding_window=32768, max_window_layers=2)
    assert_greedy_matches_hf(pipeline, oracle, hub_style)


@pytest.mark.parametrize("variant", VARIANTS)
def test_last_token_logits_close_to_hf(qwen2_moe, oracle, pipeline, variant):
    assert_last_logits_close(pipeline, oracle, qwen2_moe.path(variant))


def test_routing_spreads_tokens_over_the_experts(qwen2_moe, pipeline):
    """Only the sparse layers route (0 and 2), over most experts; without norm_topk_prob a token's two
    weights are its softmax probabilities, which sum to less than 1."""
    sparse_layers = 2
    with recording_routing() as calls:
        pipeline(qwen2_moe.path("mixed"))(MIXED_PROMPTS, do_sample=False, max_new_tokens=4, ignore_eos=True)
    used, busiest_share = expert_spread(calls, sparse_layers, EXPERTS)
    assert min(used) >= EXPERTS // 2, f"experts used per sparse layer: {used}"
    assert busiest_share < 0.5, "one expert dominates"
    assert all((weights.sum(-1) < 1 - 1e-3).all() for weights, _ in calls)


BAD_CONFIGS = {
    "top-k": (dict(num_experts_per_tok=EXPERTS + 1), r"(?=.*qwen2_moe)(?=.*num_experts_per_tok)"),
    "sparse-step": (dict(decoder_sparse_step=0), r"(?=.*qwen2_moe)(?=.*decoder_sparse_step)"),
    "window": (dict(use_sliding_window=True, sliding_window=None, layer_types=REMOVE),
               r"(?=.*qwen2_moe)(?=.*sliding_window null)"),
    "rope": (dict(rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0}),
             r"(?=.*qwen2_moe)(?=.*yarn)"),
    **missing_field_cases("num_experts", "moe_intermediate_size", "shared_expert_intermediate_size"),
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_bad_config_is_named(qwen2_moe, tmp_path, case):
    assert_config_refused(qwen2_moe.path("mixed"), tmp_path, *BAD_CONFIGS[case])
