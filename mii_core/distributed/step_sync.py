"""What the pipeline exchanges between ranks besides the model's all-reduces: a check that every rank got
the same requests (once per call), the KV cache size they agree on (once), and each step's sampled tokens."""
from __future__ import annotations

import hashlib
from typing import Any

import torch
import torch.distributed as dist

from mii_core.model.parallel import ParallelContext

_MASK = (1 << 62) - 1


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


class RankZeroSampler:
    """Rank 0 samples; one broadcast per step gives every rank the tokens, behind a checksum of the step's
    schedule so that a rank whose scheduler diverged stops with an error instead of computing garbage."""

    def __init__(self, sampler, ctx: ParallelContext) -> None:
        self.sampler, self.ctx = sampler, ctx

    def __call__(self, logits: torch.Tensor, seqs: list) -> list[int]:
        checksum = schedule_checksum(seqs)
        if self.ctx.rank == 0:
            message = torch.tensor([checksum, *self.sampler(logits, seqs)], dtype=torch.int64, device=logits.device)
        else:
            message = torch.empty(len(seqs) + 1, dtype=torch.int64, device=logits.device)
        with self.ctx.naming_failed_peers():
            dist.broadcast(message, src=0)
        values = message.tolist()
        if values[0] != checksum:
            raise RuntimeError(f"rank {self.ctx.rank}'s schedule diverged from rank 0's (were all ranks given the "
                               "same requests and the same inference_engine_config?)")
        return values[1:]


def schedule_checksum(seqs: list) -> int:
    value = len(seqs)
    for seq in seqs:
        value = (value * 1_000_003 + seq.uid * 7919 + seq.num_computed) & _MASK
    return value
