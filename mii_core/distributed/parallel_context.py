"""A rank's place in the tensor-parallel group and the collectives the sharded model calls (all-reduce after
a row-parallel layer, all-gather of vocab-parallel logits); a failed collective is a ``RankFailure``."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist


class RankFailure(RuntimeError):
    """A collective with the other ranks failed: a peer died, stalled past the timeout, or returned early."""


@dataclass(frozen=True, slots=True)
class ParallelContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # the rank's index on its machine: which GPU it drives

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            with self.naming_failed_peers():
                dist.all_reduce(tensor)
        return tensor

    @contextlib.contextmanager
    def naming_failed_peers(self) -> Iterator[None]:
        """Wrap collectives: a failure (gloo: connection closed; NCCL: watchdog timeout) becomes a
        RankFailure naming the peer ranks (with two ranks: the one that failed)."""
        try:
            yield
        except RuntimeError as exc:
            if isinstance(exc, RankFailure):
                raise
            peers = ", ".join(str(r) for r in range(self.world_size) if r != self.rank)
            raise RankFailure(f"rank {self.rank} of {self.world_size}: lost rank(s) {peers} in a collective (a "
                              "rank died, stalled past the collective timeout MII_CORE_DIST_TIMEOUT, or returned "
                              f"early); see that rank's log. Cause: {exc}") from exc

    def all_gather_last(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's ``tensor`` side by side on the last axis, in rank order (vocab-parallel logits)."""
        if self.world_size == 1:
            return tensor
        pieces = [torch.empty_like(tensor) for _ in range(self.world_size)]
        with self.naming_failed_peers():
            dist.all_gather(pieces, tensor.contiguous())
        return torch.cat(pieces, dim=-1)

    def even_slice(self, full: int) -> tuple[int, int]:
        """(start, size) of this rank's share of ``full`` rows split evenly."""
        size = full // self.world_size
        return self.rank * size, size
