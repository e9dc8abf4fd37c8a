"""How a model's heads and widths split over ``tensor_parallel`` ranks, checked before anything is loaded.

Query heads, MLP and expert widths split evenly. KV heads split evenly when there are at least as many
as ranks; with fewer (Falcon-7B's one KV head, 8 GQA KV heads on 16 ranks) each KV head is replicated on
``world_size / num_kv_heads`` neighbouring ranks, which are exactly the ranks whose query heads use it.
"""
from __future__ import annotations

from mii_core.distributed.parallel_context import ParallelContext
from mii_core.model.spec import DecoderSpec


def kv_head_slice(num_kv_heads: int, ctx: ParallelContext) -> tuple[int, int]:
    """(first KV head, KV heads) held by this rank."""
    if num_kv_heads >= ctx.world_size:
        return ctx.even_slice(num_kv_heads)
    # ranks r·W/K .. (r+1)·W/K - 1 hold KV head r: their query heads form that head's group
    return ctx.rank * num_kv_heads // ctx.world_size, 1


def local_kv_heads(num_kv_heads: int, world_size: int) -> int:
    """KV heads per rank: what the KV cache of one rank holds."""
    return max(1, num_kv_heads // world_size)


def sharding_problems(spec: DecoderSpec, tensor_parallel: int) -> list[str]:
    """What keeps ``tensor_parallel`` ranks from splitting this model; empty when it splits."""
    problems = []
    if spec.num_heads % tensor_parallel:
        problems.append(f"the {spec.num_heads} attention heads")
    kv = spec.num_kv_heads
    if kv % tensor_parallel and tensor_parallel % kv:
        problems.append(f"the {kv} KV heads (nor is it a multiple of them, to replicate each)")
    if spec.intermediate_size % tensor_parallel:
        problems.append(f"the MLP width {spec.intermediate_size}")
    return problems


def check_tensor_parallel(spec: DecoderSpec, tensor_parallel: int) -> None:
    """A ValueError that says which sizes ``tensor_parallel`` fails to divide and which values work."""
    problems = sharding_problems(spec, tensor_parallel)
    if not problems:
        return
    working = [n for n in range(1, spec.num_heads + 1) if not sharding_problems(spec, n)]
    raise ValueError(f"tensor_parallel={tensor_parallel} does not divide {' or '.join(problems)} of this model; "
                     f"use a tensor_parallel of {', '.join(map(str, working))} (and launch that many ranks)")
