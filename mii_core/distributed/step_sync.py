"""What the pipeline exchanges between ranks besides the model's all-reduces: a check that every rank got
the same requests (once per call), the KV cache size they agree on (once), and a server's requests
(``share_from_rank0``). Each step's sampled tokens travel in ``mii_core.sampling.rank_zero``."""
from __future__ import annotations

import hashlib
from typing import Any

import torch
import torch.distributed as dist

from mii_core.distributed.parallel_context import ParallelContext

def agree_on_min(ctx: ParallelContext, value: int, device: torch.device) -> int:
    """The smallest ``value`` over the ranks (KV blocks: every rank must schedule the same cache)."""
    if ctx.world_size == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.int64, device=device)
    with ctx.naming_failed_peers():
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return int(tensor.item())


def check_same_requests(ctx: ParallelContext, description: str, device: torch.device) -> None:
    """Every rank must be called with the same requests: each rank schedules them itself."""
    if ctx.world_size == 1:
        return
    digest = int.from_bytes(hashlib.sha256(description.encode()).digest()[:7], "little")
    mine = torch.tensor([digest], dtype=torch.int64, device=device)
    gathered = [torch.empty_like(mine) for _ in range(ctx.world_size)]
    with ctx.naming_failed_peers():
        dist.all_gather(gathered, mine)
    differing = [r for r, d in enumerate(gathered) if int(d.item()) != int(gathered[0].item())]
    if differing:
        raise ValueError(f"rank(s) {differing} were called with other prompts or options than rank 0; under "
                         "tensor parallelism every rank must make the same pipeline calls")


def share_from_rank0(ctx: ParallelContext, value: Any) -> Any:
    """Rank 0's ``value`` (any picklable object) on every rank. For a server, whose requests arrive on rank 0
    only: share each step's new requests before adding them, so every rank schedules the same work."""
    if ctx.world_size == 1:
        return value
    box = [value if ctx.rank == 0 else None]
    with ctx.naming_failed_peers():
        dist.broadcast_object_list(box, src=0)
    return box[0]
