"""Mixtral (mii-plugin-mixtral): top-2 of 8 experts with weights softmaxed over the chosen two, GQA, and a
sliding window when set; experts load from the hub's per-expert tensors and from transformers' fused ones."""
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, MixtralConfig, MixtralForCausalLM

from support.checkpoint_edits import REMOVE
from support.family_parity import SCHEDULES, TinyFamily, assert_config_refused, assert_greedy_matches_hf
from support.moe_routing import expert_spread, recording_routing
from support.prompts import MIXED_PROMPTS

EXPERTS, TOP_K, LAYERS = 8, 2, 2
NEW_TOKENS = 24
WINDOW_NEW_TOKENS = 48  # with a window of 16: every long sequence runs well past it
SHAPE = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=LAYERS, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, max_position_embeddings=512, num_local_experts=EXPERTS,
             num_experts_per_tok=TOP_K, initializer_range=0.15, rms_norm_eps=1e-5)
VARIANTS = {"full": dict(sliding_window=None), "window": dict(sliding_window=16)}
SEEDS = {"full": 0, "window": 4}  # every greedy reference clear of near-ties (norms as HF writes them)


def tiny_family(mktemp) -> TinyFamily:
    return TinyFamily(mktemp, MixtralForCausalLM, MixtralConfig, SHAPE, VARIANTS, SEEDS, randomize_norms=False)


@pytest.fixture(scope="module")
def mixtral(tmp_path_factory):
    return tiny_family(tmp_path_factory.mktemp).path


@pytest.fixture(scope="module")
def fused_mixtral(mixtral, tmp_path_factory):
    """The "full" checkpoint rewritten in transformers' fused layout: per layer ``mlp.gate.weight``,
    ``mlp.experts.gate_up_proj`` [E, 2F, H] (each expert's w1 rows, then its w3 rows) and
    ``mlp.experts.down_proj`` [E, H, F] (w2)."""
    source = mixtral("full")
    folder = tmp_path_factory.mktemp("mixtral-fused")
    for file in source.iterdir():
        if file.name != "model.safetensors":
            shutil.copy(file, folder / file.name)
    hub = load_file(source / "model.safetensors")
    fused = {name: tensor for name, tensor in hub.items() if ".block_sparse_moe." not in name}
    for i in range(LAYERS):
        moe = f"model.layers.{i}.block_sparse_moe."
        expert = lambda e, w: hub[f"{moe}experts.{e}.{w}.weight"]  # noqa: E731
        fused[f"model.layers.{i}.mlp.gate.weight"] = hub[moe + "gate.weight"]
        fused[f"model.layers.{i}.mlp.experts.gate_up_proj"] = torch.stack(
            [torch.cat([expert(e, "w1"), expert(e, "w3")]) for e in range(EXPERTS)])
        fused[f"model.layers.{i}.mlp.experts.down_proj"] = torch.stack([expert(e, "w2") for e in range(EXPERTS)])
    save_file(fused, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def test_transformers_saves_the_hub_layout_and_loads_our_fused_copy_alike(mixtral, fused_mixtral):
    """Checks the fixtures: save_pretrained writes one tensor per expert, and HF reads the fused copy
    into the same weights (so the copy is a faithful fused checkpoint)."""
    names = load_file(mixtral("full") / "model.safetensors").keys()
    assert "model.layers.0.block_sparse_moe.experts.7.w3.weight" in names
    assert not any("gate_up_proj" in n for n in names)
    hub, fused = (AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32).state_dict()
                  for p in (mixtral("full"), fused_mixtral))
    assert hub.keys() == fused.keys()
    assert all(torch.equal(hub[name], fused[name]) for name in hub)


@pytest.mark.parametrize("layout", ["hub", "fused"])
def test_mixed_batch_greedy_matches_hf(mixtral, fused_mixtral, oracle, pipeline, layout):
    path = mixtral("full") if layout == "hub" else fused_mixtral
    assert_greedy_matches_hf(pipeline, oracle, path, reference_path=mixtral("full"), new_tokens=NEW_TOKENS)


@pytest.mark.parametrize("schedule", [s for s in SCHEDULES if s != "whole"])
def test_chunked_and_preempted_greedy_matches_hf(mixtral, oracle, pipeline, schedule):
    # 30 blocks of 4: the longest sequence (27 blocks) fits alone, the batch (~82) does not
    assert_greedy_matches_hf(pipeline, oracle, mixtral("full"), schedule, new_tokens=NEW_TOKENS, cache_blocks=30)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_sliding_window_past_the_window_matches_hf(mixtral, oracle, pipeline, schedule):
    assert_greedy_matches_hf(pipeline, oracle, mixtral("window"), schedule, new_tokens=WINDOW_NEW_TOKENS,
                             cache_blocks=10)


def test_routing_spreads_tokens_over_the_experts(mixtral, pipeline):
    """The router really picks among the experts: in each layer at least half of them get tokens, none
    takes half the picks, and the two weights of each token are softmaxed over its two picks (sum 1)."""
    with recording_routing() as calls:
        pipeline(mixtral("full"))(MIXED_PROMPTS, do_sample=False, max_new_tokens=4, ignore_eos=True)
    used, busiest_share = expert_spread(calls, LAYERS, EXPERTS)
    assert min(used) >= EXPERTS // 2, f"experts used per layer: {used}"
    assert busiest_share < 0.5, "one expert dominates"
    for weights, ids in calls:
        assert ids.shape[1] == TOP_K and (ids[:, 0] != ids[:, 1]).all()
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[0]))


def test_missing_expert_count_is_named(mixtral, tmp_path):
    assert_config_refused(mixtral("full"), tmp_path, {"num_local_experts": REMOVE}, r"config\.json.*num_local_experts")


@pytest.mark.parametrize("field, value, match", [
    ("num_experts_per_tok", 9, r"mixtral.*num_experts_per_tok"),
    ("hidden_act", "relu", r"mixtral.*hidden_act 'relu'"),
])
def test_bad_config_is_named_with_the_model_type(mixtral, tmp_path, field, value, match):
    assert_config_refused(mixtral("full"), tmp_path, {field: value}, match)


def test_missing_expert_tensor_is_named(mixtral, tmp_path):
    """Either layout may be complete; a hub checkpoint missing one expert's tensor is refused, naming it."""
    import mii_core

    source = mixtral("full")
    for file in source.iterdir():
        shutil.copy(file, tmp_path / file.name)
    tensors = load_file(source / "model.safetensors")
    del tensors["model.layers.1.block_sparse_moe.experts.5.w3.weight"]
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"missing weights: model\.layers\.1\.block_sparse_moe\.experts\.5\.w3"):
        mii_core.pipeline(str(tmp_path))
