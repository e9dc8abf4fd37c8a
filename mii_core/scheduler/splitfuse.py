"""Dynamic SplitFuse: decodes first, then prompt chunks fill the step's token budget.

Every step: (1) one token for each running decode, oldest first; a decode that needs a KV block when
none is free preempts the most recently admitted sequence (its blocks are freed and it is recomputed
later); (2) prompt chunks, first for sequences already part-way through their prompt, then for waiting
ones in arrival order, a long prompt split across steps, short ones packed. A waiting sequence is
admitted only when its whole remaining prompt fits in the free blocks (on a sliding-window model: when
the most blocks it ever holds, a window's, are free; its prompt then goes in chunks that fit), and the
queue head is never overtaken (FCFS). If nothing could be scheduled, the newest running sequence is
preempted until the oldest can move; since every request fits the cache on its own (checked when it is added), some
sequence always advances: no deadlock, and no request is dropped.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from mii_core.config.engine import StateManagerConfig
from mii_core.engine.inference_engine import InferenceEngine
from mii_core.scheduler.sequence import Sequence, SequenceStatus


@dataclass(slots=True)
class StepPlan:
    seqs: list[Sequence] = field(default_factory=list)
    num_tokens: list[int] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)

    def add(self, seq: Sequence, count: int) -> None:
        self.seqs.append(seq)
        self.num_tokens.append(count)


class Scheduler:
    def __init__(self, engine: InferenceEngine, config: StateManagerConfig) -> None:
        self.engine, self.config = engine, config
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # in admission order, oldest first
        self.num_preemptions = 0  # observable, so tests can prove the preemption path ran

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def finish(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.engine.flush(seq.uid)

    def schedule(self) -> StepPlan:
        plan = StepPlan()
        while True:
            budget = self._schedule_decodes(plan, self.config.max_ragged_batch_size)
            self._schedule_prefills(plan, budget)
            if plan.seqs or not self.running:
                return plan
            self._preempt(self.running[-1], plan)  # stuck: free the newest so the oldest can move

    def _room(self, plan: StepPlan, budget: int) -> bool:
        return budget > 0 and len(plan.seqs) < self.config.max_ragged_sequence_count

    def _schedule_decodes(self, plan: StepPlan, budget: int) -> int:
        for seq in [s for s in self.running if s.num_pending == 1]:
            if seq.status is not SequenceStatus.RUNNING:
                continue  # preempted earlier in this loop
            if not self._room(plan, budget):
                break
            while self.engine.state.blocks_needed(seq.uid, 1) > self.engine.free_blocks:
                victim = self.running[-1]
                self._preempt(victim, plan)
                if victim is seq:
                    break
            if seq.status is SequenceStatus.RUNNING:
                self.engine.state.reserve(seq.uid, 1)  # take the block now so later checks see it gone
                plan.add(seq, 1)
                budget -= 1
        return budget

    def _schedule_prefills(self, plan: StepPlan, budget: int) -> None:
        for seq in [s for s in self.running if s.num_pending > 1]:
            if not self._room(plan, budget):
                return
            count, blocks = self.engine.query(seq.uid, min(seq.num_pending, budget), self.engine.free_blocks)
            if count > 0:
                self.engine.state.reserve(seq.uid, count)
                plan.add(seq, count)
                budget -= count
        while self.waiting and self._room(plan, budget) and len(self.running) < self.config.max_tracked_sequences:
            seq = self.waiting[0]
            seq.num_computed = self.engine.state.adopt_prefix(seq.uid, seq.token_slice(0, seq.num_tokens),
                                                               len(seq.prompt_ids))
            free = self.engine.free_blocks
            # the whole remaining prompt, or under a sliding window the most blocks it holds fed in chunks
            if self.engine.state.admission_blocks(seq.uid, seq.num_pending) > free:
                self.engine.flush(seq.uid)  # give any adopted prefix back until it can run
                seq.num_computed = 0
                return  # FCFS: later arrivals do not overtake the head
            count = min(seq.num_pending, budget, self.engine.state.tokens_fitting(seq.uid, free))
            # the original prompt's length, whatever the first put holds (a chunk, or prompt + output
            # when recomputed after a preemption): a rope may rotate every token by it
            self.engine.state.reserve(seq.uid, count, len(seq.prompt_ids))
            self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            plan.add(seq, count)
            budget -= count

    def _preempt(self, seq: Sequence, plan: StepPlan) -> None:
        self.running.remove(seq)
        self.engine.flush(seq.uid)
        seq.preempt()
        self.num_preemptions += 1
        self.waiting.appendleft(seq)
        plan.preempted.append(seq)
