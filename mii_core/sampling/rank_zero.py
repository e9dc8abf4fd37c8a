"""Sampling under tensor parallelism: rank 0 samples and one broadcast per step gives every rank its tokens."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
import torch.distributed as dist

from mii_core.distributed.parallel_context import ParallelContext
from mii_core.sampling.logprobs import TokenLogprob
from mii_core.sampling.protocol import SequenceForSampling, TokenSampler

_MASK = (1 << 62) - 1


class RankZeroSampler:
    """Rank 0 samples; one broadcast per step gives every rank the tokens, behind a checksum of the step's
    schedule so that a rank whose scheduler diverged stops with an error instead of computing garbage. A
    :class:`~mii_core.sampling.protocol.TokenSampler` around rank 0's ``sampler`` (every rank builds one alike)."""

    def __init__(self, sampler: TokenSampler, ctx: ParallelContext) -> None:
        self.sampler, self.ctx = sampler, ctx

    def __call__(self, logits: torch.Tensor, seqs: Sequence[SequenceForSampling]) -> list[int]:
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

    def all_greedy(self, seqs: Sequence[SequenceForSampling], unread: int = 0) -> bool:
        """Asked of each rank's own sampler, with no collective: every rank holds the same sequences with
        the same options and token counts, and builds its sampler from the same EOS ids, so every rank
        gives rank 0's answer."""
        return self.sampler.all_greedy(seqs, unread)

    def logprobs(self, logits: torch.Tensor, seqs: Sequence[SequenceForSampling],
                 tokens: Sequence[int]) -> list[Optional[TokenLogprob]]:
        """Rank 0 computes them from its full logits (it alone answers requests); the others skip the work."""
        if self.ctx.rank == 0:
            return self.sampler.logprobs(logits, seqs, tokens)
        return [None] * len(seqs)


def schedule_checksum(seqs: Sequence[Any]) -> int:
    """Of the step's scheduled sequences (each with ``uid`` and ``num_computed``)."""
    value = len(seqs)
    for seq in seqs:
        value = (value * 1_000_003 + seq.uid * 7919 + seq.num_computed) & _MASK
    return value
