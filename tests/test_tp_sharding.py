"""Tensor-parallel sharding without a process group: which slice each rank holds, the memory it takes,
and the clear error for a tensor_parallel that does not divide the model."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file


def _rank_model(path, rank: int, world_size: int):
    from mii_core.engine.builder import load_policy
    from mii_core.loading.weights import load_weights
    from mii_core.model.ops import KernelSet
    from mii_core.distributed.parallel_context import ParallelContext
    from mii_core.plugins import get_plugins

    policy = load_policy(path)
    kernels = KernelSet("cpu", get_plugins().kernels)
    model = policy.build_model(ParallelContext(rank, world_size), kernels, torch.device("cpu"), torch.float32)
    load_weights(model, policy, path, show_progress=False)
    return model


def _param_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def test_each_rank_holds_about_half_the_parameters(checkpoint):
    path = checkpoint("gqa")
    whole = _param_bytes(_rank_model(path, 0, 1))
    for rank in (0, 1):
        share = _param_bytes(_rank_model(path, rank, 2)) / whole
        # only the norms are replicated; the vocabulary is padded by at most one row
        assert 0.5 <= share < 0.52, f"rank {rank} holds {share:.3f} of the weights"


def test_ranks_hold_their_vocabulary_rows_and_heads(checkpoint):
    path = checkpoint("gqa")  # 4 query heads, 2 KV heads of 16 (see tiny_llama.py)
    weights = load_file(path / "model.safetensors")
    embed = weights["model.embed_tokens.weight"]
    vocab = embed.shape[0]
    per_rank = -(-vocab // 2)
    ranks = [_rank_model(path, r, 2) for r in (0, 1)]
    stacked = torch.cat([m.embed.weight for m in ranks])
    assert torch.equal(stacked[:vocab], embed)
    assert torch.count_nonzero(stacked[vocab:]) == 0  # padding rows
    assert ranks[0].embed.weight.shape[0] == per_rank
    k_proj = weights["model.layers.1.self_attn.k_proj.weight"]
    q_proj = weights["model.layers.1.self_attn.q_proj.weight"]
    for rank, model in enumerate(ranks):
        qkv = model.layers[1].attn.qkv.weight
        assert torch.equal(qkv[:32], q_proj[32 * rank:32 * (rank + 1)])  # query heads 2r, 2r+1
        assert torch.equal(qkv[32:48], k_proj[16 * rank:16 * (rank + 1)])  # KV head r


def test_four_ranks_share_each_of_two_kv_heads(checkpoint):
    """GQA with fewer KV heads than ranks: rank r holds query head r and KV head r // 2, its group's."""
    path = checkpoint("gqa")
    weights = load_file(path / "model.safetensors")
    q_proj, v_proj = weights["model.layers.0.self_attn.q_proj.weight"], weights["model.layers.0.self_attn.v_proj.weight"]
    for rank in range(4):
        attn = _rank_model(path, rank, 4).layers[0].attn
        assert (attn.local_heads, attn.local_kv_heads) == (1, 1)
        assert torch.equal(attn.qkv.weight[:16], q_proj[16 * rank:16 * (rank + 1)])
        kv_head = rank // 2
        assert torch.equal(attn.qkv.weight[32:], v_proj[16 * kv_head:16 * (kv_head + 1)])


def test_experts_split_on_their_width(tmp_path_factory):
    """Mixtral: each rank holds every expert's F/2 slice of w1 (gate), w3 (up) and w2 (down); the router whole."""
    import test_arch_mixtral

    path = test_arch_mixtral.tiny_family(tmp_path_factory.mktemp).path("full")
    weights = load_file(path / "model.safetensors")
    prefix = "model.layers.1.block_sparse_moe"
    half = 48  # intermediate_size 96
    for rank in (0, 1):
        moe = _rank_model(path, rank, 2).layers[1].mlp
        rows = slice(half * rank, half * (rank + 1))
        for expert in (0, 7):
            assert torch.equal(moe.experts.gate_up[expert, :half], weights[f"{prefix}.experts.{expert}.w1.weight"][rows])
            assert torch.equal(moe.experts.gate_up[expert, half:], weights[f"{prefix}.experts.{expert}.w3.weight"][rows])
            assert torch.equal(moe.experts.down[expert], weights[f"{prefix}.experts.{expert}.w2.weight"][:, rows])
        assert torch.equal(moe.router.weight, weights[f"{prefix}.gate.weight"])


@pytest.mark.parametrize("kv_heads, world, expected", [
    (1, 2, [(0, 1), (0, 1)]),                    # Falcon-7B: the one KV head on both ranks
    (2, 4, [(0, 1), (0, 1), (1, 1), (1, 1)]),    # query heads of ranks 0, 1 are KV head 0's group
    (8, 2, [(0, 4), (4, 4)]),
    (8, 16, [(r // 2, 1) for r in range(16)]),   # GQA with 8 KV heads on 16 ranks
])
def test_kv_heads_split_or_replicated(kv_heads, world, expected):
    from mii_core.distributed.parallel_context import ParallelContext
    from mii_core.model.sharding import kv_head_slice

    assert [kv_head_slice(kv_heads, ParallelContext(r, world)) for r in range(world)] == expected


def test_replicated_kv_head_loads_the_whole_head(tmp_path_factory):
    from transformers import FalconConfig, FalconForCausalLM

    from support.tiny_models import build_tiny_checkpoint

    config = FalconConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=4, multi_query=True,
                          new_decoder_architecture=False, parallel_attn=True)
    path = build_tiny_checkpoint(tmp_path_factory.mktemp("falcon-mq"), FalconForCausalLM, config)
    fused = load_file(path / "model.safetensors")["transformer.h.0.self_attention.query_key_value.weight"]
    for rank in (0, 1):
        qkv = _rank_model(path, rank, 2).layers[0].attn.qkv.weight  # [2 query heads | k | v] of 16 rows
        assert torch.equal(qkv[:32], fused[32 * rank:32 * (rank + 1)])
        assert torch.equal(qkv[32:], fused[64:96])


@pytest.mark.parametrize("tensor_parallel", [3, 8])
def test_tensor_parallel_that_does_not_divide_is_refused_before_loading(checkpoint, tensor_parallel, monkeypatch):
    from mii_core.config import ModelConfig
    from mii_core.engine import builder

    def no_loading(*_args, **_kwargs):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(builder, "load_weights", no_loading)
    config = ModelConfig(model_name_or_path=str(checkpoint("gqa")), tensor_parallel=tensor_parallel)
    with pytest.raises(ValueError, match=rf"tensor_parallel={tensor_parallel} does not divide the 4 attention "
                                         r"heads.*use a tensor_parallel of 1, 2, 4"):
        builder.build_engine(config)
