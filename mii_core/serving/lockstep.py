"""A tensor-parallel replica: rank 0 serves, the other ranks follow its steps in lockstep.

Requests reach rank 0 only (its engine service and its link). Every rank runs the same deterministic
scheduler (see docs/architecture.md, "one broadcast per step"), so the other ranks need only what
changed the scheduler's state on rank 0 since the last step: the sequences added and cancelled. Rank 0's
:class:`LockstepLoop` records those changes and shares them with ``step_sync.share_from_rank0`` just
before each step; :func:`follow` (ranks > 0) applies them and runs the same step, whose sampled tokens
come from rank 0 through ``RankZeroSampler`` as in the pipeline. No other message exists.

While idle, rank 0 sends a heartbeat (an empty change list) every ``HEARTBEAT_SECONDS``, so that the
followers, blocked in the next share, never reach the collective timeout, and so that rank 0 notices
a lost follower within that time even when no request comes.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Optional

import torch.distributed as dist

from mii_core.distributed.parallel_context import ParallelContext
from mii_core.distributed.step_sync import share_from_rank0
from mii_core.engine.generation_loop import GenerationLoop
from mii_core.scheduler.sequence import Sequence

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 2.0

# what a share carries besides the changes: step (then every rank steps), idle (heartbeat), stop
STEP, IDLE, STOP = "step", "idle", "stop"


class LockstepLoop:
    """Rank 0's GenerationLoop under tensor parallelism: the engine service drives it as a plain loop."""

    def __init__(self, loop: GenerationLoop, ctx: ParallelContext) -> None:
        self.loop, self.ctx = loop, ctx
        self._changes: list[tuple] = []

    # what the engine service reads directly
    @property
    def engine(self):
        return self.loop.engine

    @property
    def scheduler(self):
        return self.loop.scheduler

    @property
    def in_flight(self) -> list[Sequence]:
        return self.loop.in_flight

    @property
    def step_in_flight(self) -> bool:
        return self.loop.step_in_flight

    def call_before_device_wait(self, hook) -> None:
        self.loop.call_before_device_wait(hook)

    def check_fits(self, seq: Sequence) -> None:
        self.loop.check_fits(seq)

    # what changes the scheduler: applied here at once, replayed by the followers before the next step
    def add(self, seq: Sequence) -> None:
        self.loop.add(seq)
        self._changes.append(("add", seq.uid, seq.prompt_ids, seq.max_new_tokens, seq.options))

    def cancel(self, seq: Sequence) -> None:
        self.loop.cancel(seq)
        self._changes.append(("cancel", seq.uid))

    def abort_all(self) -> None:
        self.loop.abort_all()
        self._changes.append(("abort",))

    def step(self) -> list[Sequence]:
        self._share(STEP)
        return self.loop.step()

    def heartbeat(self) -> None:
        self._share(IDLE)

    def stop_followers(self) -> None:
        self._share(STOP)

    def _share(self, what: str) -> None:
        changes, self._changes = self._changes, []
        share_from_rank0(self.ctx, (changes, what))


def follow(loop: GenerationLoop, ctx: ParallelContext, new_sequence: Callable[..., Sequence]) -> None:
    """Ranks > 0: apply rank 0's changes and run its steps until it says stop. A failed collective raises
    RankFailure naming the peers (rank 0 gone or stalled past the timeout)."""
    live: dict[int, Sequence] = {}
    while True:
        changes, what = share_from_rank0(ctx, None)
        for change in changes:
            _apply(loop, live, change, new_sequence)
        if what == STOP:
            return
        if what == STEP:
            for seq in loop.step():
                live.pop(seq.uid, None)


def _apply(loop: GenerationLoop, live: dict[int, Sequence], change: tuple, new_sequence) -> None:
    kind = change[0]
    if kind == "add":
        _kind, uid, prompt_ids, max_new_tokens, options = change
        live[uid] = new_sequence(uid, prompt_ids, max_new_tokens, options)
        loop.add(live[uid])
    elif kind == "cancel":
        seq = live.pop(change[1], None)
        if seq is not None:
            loop.cancel(seq)
    elif kind == "abort":
        loop.abort_all()
        live.clear()


def gather_rank_pids(ctx: ParallelContext) -> list[int]:
    """Every rank's process id, in rank order (rank 0 reports them, so the router can watch each rank)."""
    if ctx.world_size == 1:
        return [os.getpid()]
    pids: list[Optional[int]] = [None] * ctx.world_size
    with ctx.naming_failed_peers():
        dist.all_gather_object(pids, os.getpid())
    return [int(p) for p in pids]
