"""DeepSeek-V2 (mii-plugin-deepseek-v2) against HF transformers: multi-head latent attention with queries
through a q_lora_rank latent or q_proj, v_head_dim narrower and wider than the query/key head, plain and YaRN
rope (attention factor and softmax mscale), routed experts by greedy and group-limited top-k times
routed_scaling_factor, shared experts, dense layers before first_k_dense_replace, attention and MLP biases."""
import pytest
import torch
from transformers import DeepseekV2Config, DeepseekV2ForCausalLM

from support.checkpoint_edits import REMOVE, edit_config
from support.family_parity import (SCHEDULES, TinyFamily, assert_config_refused, assert_greedy_matches_hf,
                                   assert_last_logits_close, assert_prefix_cached_matches_hf, missing_field_cases)

EXPERTS, LAYERS = 8, 3
SHAPE = dict(hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=LAYERS,
             num_attention_heads=4, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8,
             max_position_embeddings=512, n_routed_experts=EXPERTS, num_experts_per_tok=2, initializer_range=0.15)
# YaRN over a short original context, so that the prompts reach the blend; mscale ≠ mscale_all_dim, so that
# both the cos/sin attention factor and the softmax scale's correction differ from 1
YARN = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 32,
        "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 0.5}
VARIANTS = {
    # DeepSeek-V2's attention (q through a latent), v_head_dim 12 < 16 (values padded in the cache), layer 0 dense,
    # no shared expert, greedy top-2 scaled by routed_scaling_factor
    "q-lora": dict(q_lora_rank=24, v_head_dim=12, first_k_dense_replace=1, n_shared_experts=0,
                   routed_scaling_factor=1.5),
    # DeepSeek-V2-Lite's attention (q_proj), v_head_dim 20 > 16 (queries and keys padded), group-limited routing
    # (both picks from the one best of 4 groups of 2), two shared experts, every layer sparse
    "q-proj-grouped": dict(q_lora_rank=None, v_head_dim=20, first_k_dense_replace=0, n_shared_experts=2,
                           topk_method="group_limited_greedy", n_group=4, topk_group=1),
    # YaRN, attention and MLP biases (the dense MLPs' and the shared expert's), layers 0 and 1 dense
    "yarn-bias": dict(q_lora_rank=24, v_head_dim=16, first_k_dense_replace=2, n_shared_experts=1,
                      rope_parameters=YARN, attention_bias=True, mlp_bias=True),
}
SEEDS = {"q-lora": 0, "q-proj-grouped": 0, "yarn-bias": 0}  # clear greedy margins, varied references


def tiny_family(mktemp) -> TinyFamily:
    return TinyFamily(mktemp, DeepseekV2ForCausalLM, DeepseekV2Config, SHAPE, VARIANTS, SEEDS)


@pytest.fixture(scope="module")
def deepseek_v2(tmp_path_factory):
    return tiny_family(tmp_path_factory.mktemp)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_q_lora_greedy_matches_hf(deepseek_v2, oracle, pipeline, schedule):
    assert_greedy_matches_hf(pipeline, oracle, deepseek_v2.path("q-lora"), schedule)


def test_q_lora_prefix_cached_matches_hf(deepseek_v2, oracle, pipeline):
    assert_prefix_cached_matches_hf(pipeline, oracle, deepseek_v2.path("q-lora"))


def test_q_proj_group_limited_greedy_matches_hf(deepseek_v2, oracle, pipeline):
    assert_greedy_matches_hf(pipeline, oracle, deepseek_v2.path("q-proj-grouped"))


@pytest.mark.parametrize("schedule", ["whole", "chunked"])
def test_yarn_with_biases_greedy_matches_hf(deepseek_v2, oracle, pipeline, schedule):
    assert_greedy_matches_hf(pipeline, oracle, deepseek_v2.path("yarn-bias"), schedule)


def test_hub_style_config_matches_hf(deepseek_v2, oracle, pipeline, tmp_path):
    """DeepSeek-V2's own config.json: rope_scaling with "type" and rope_theta at the top, no head_dim, and the
    fields of DeepSeek's modeling code that transformers does not read (moe_layer_freq 1, softmax scoring)."""
    hub_style = edit_config(deepseek_v2.path("yarn-bias"), tmp_path / "hub-style", rope_parameters=REMOVE,
                            rope_theta=YARN["rope_theta"], head_dim=REMOVE, qk_head_dim=REMOVE,
                            rope_scaling={"type": "yarn", **{k: v for k, v in YARN.items()
                                                            if k not in ("rope_type", "rope_theta")}},
                            moe_layer_freq=1, scoring_func="softmax", aux_loss_alpha=0.001, seq_aux=True)
    assert_greedy_matches_hf(pipeline, oracle, hub_style, reference_path=deepseek_v2.path("yarn-bias"))


@pytest.mark.parametrize("variant", VARIANTS)
def test_last_token_logits_close_to_hf(deepseek_v2, oracle, pipeline, variant):
    assert_last_logits_close(pipeline, oracle, deepseek_v2.path(variant))


def test_kv_cache_holds_the_latent_and_rope_key_once(deepseek_v2, pipeline):
    """By hand: kv_lora_rank 16 + qk_rope_head_dim 8 = 24 float32 features, 96 bytes a token and layer (the
    up-projected keys and values would take 4 heads × (16 + 12) features, 448 bytes); the value is a view of
    the key's first 16 features, not a copy."""
    engine = pipeline(deepseek_v2.path("q-lora"), dtype="float32").engine
    shape = engine.kv_cache.shape
    assert shape.bytes_per_token // shape.num_layers == 96
    assert engine.kv_cache.data.numel() * 4 == (engine.kv_cache.num_blocks + 1) * shape.block_size * 96 * LAYERS
    keys, values = engine.kv_cache.layer(0)
    assert keys.shape[2:] == (1, 24) and values.shape[2:] == (1, 16)
    assert values.data_ptr() == keys.data_ptr() and values.stride() == keys.stride()


def test_moe_layer_freq_makes_the_layers_off_its_grid_dense():
    """DeepSeek's code: layer i is sparse when i >= first_k_dense_replace and i % moe_layer_freq == 0."""
    from mii_plugin_deepseek_v2.config import moe_spec

    hf = dict(SHAPE, num_hidden_layers=7, first_k_dense_replace=2, moe_layer_freq=2, num_experts_per_tok=2)
    assert moe_spec(hf).dense_layers == (0, 1, 3, 5)


def test_group_limited_routing_keeps_the_best_groups_only():
    """Worked by hand: groups (0, 1), (2, 3), (4, 5) score by their best expert 0.30, 0.25, 0.20; with one group
    kept only experts 0 and 1 remain, so top-2 is (0, 1) where plain top-2 would be (0, 2)."""
    from mii_plugin_deepseek_v2.moe import best_groups_only

    scores = torch.tensor([[0.30, 0.05, 0.25, 0.10, 0.20, 0.10]])
    kept = best_groups_only(scores, groups=3, kept=1)
    assert torch.equal(kept, torch.tensor([[0.30, 0.05, 0.0, 0.0, 0.0, 0.0]]))
    assert torch.topk(kept, 2).indices.tolist() == [[0, 1]]


BAD_CONFIGS = {
    "topk-method": (dict(topk_method="noaux_tc"), r"(?=.*deepseek_v2)(?=.*topk_method)"),
    "norm-topk": (dict(norm_topk_prob=True), r"(?=.*deepseek_v2)(?=.*norm_topk_prob)"),
    "scoring": (dict(scoring_func="sigmoid"), r"(?=.*deepseek_v2)(?=.*scoring_func)"),
    "groups": (dict(topk_method="group_limited_greedy", n_group=3, topk_group=1), r"(?=.*deepseek_v2)(?=.*n_group)"),
    "top-k": (dict(num_experts_per_tok=EXPERTS + 1), r"(?=.*deepseek_v2)(?=.*num_experts_per_tok)"),
    "kv-heads": (dict(num_key_value_heads=2), r"(?=.*deepseek_v2)(?=.*num_key_value_heads)"),
    "rope": (dict(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}),
             r"(?=.*deepseek_v2)(?=.*linear)"),
    "layer-freq": (dict(moe_layer_freq=0), r"(?=.*deepseek_v2)(?=.*moe_layer_freq)"),
    "partial-rope": (dict(partial_rotary_factor=0.5), r"(?=.*deepseek_v2)(?=.*partial_rotary_factor)"),
    "bias-without-shared": (dict(mlp_bias=True), r"(?=.*deepseek_v2)(?=.*n_shared_experts)"),
    **missing_field_cases("kv_lora_rank", "qk_rope_head_dim", "v_head_dim", "moe_intermediate_size"),
}


def test_unequal_k_and_v_fp8_scales_are_refused(deepseek_v2, pipeline):
    """The value is read from the key's bytes, so one scale must serve both (tests/test_fp8_kv_cache.py runs the
    FP8 latent cache against HF)."""
    from mii_plugin_deepseek_v2.attention import LatentAttention

    model = pipeline(deepseek_v2.path("q-lora")).engine.model
    layer = next(m for m in model.modules() if isinstance(m, LatentAttention))
    with pytest.raises(ValueError, match="equal rows"):
        layer.use_kv_scales(torch.tensor([[1.0], [2.0]]))


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_bad_config_is_named(deepseek_v2, tmp_path, case):
    assert_config_refused(deepseek_v2.path("q-lora"), tmp_path, *BAD_CONFIGS[case])
