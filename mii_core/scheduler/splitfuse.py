"""The scheduler: it owns the request state (the sequences and their KV blocks) and plans each step by
Dynamic SplitFuse; the model runner only runs the plans.

Every step: (1) one token for each running decode, oldest first; a decode that needs a KV block when
none is free preempts the most recently admitted sequence (its blocks are freed and it is recomputed
later); (2) prompt chunks, first for sequences already part-way through their prompt, then for waiting
ones in arrival order, a long prompt split across steps, short ones packed. Under the "priority" policy
(vLLM's) "oldest" and "arrival order" read "by precedence" (a request's priority, lower first, then its
arrival) and the sequence preempted is the one of lowest precedence. A waiting sequence is
admitted only when its whole remaining prompt fits in the free blocks (on a sliding-window model: when
the most blocks it ever holds, a window's, are free; its prompt then goes in chunks that fit), and the
queue head is never overtaken (FCFS). A model whose cached keys go stale once a sequence reaches a length
(its ``restart_length``: Phi-3's LongRoPE switching to its long factors, where HF's generate recomputes the
whole cache) has such a sequence dropped and recomputed as one prompt of all its tokens at that step.
If nothing could be scheduled, the newest running sequence is preempted until the oldest can move; since
every request fits the cache on its own (checked when it is added), some sequence always advances: no
deadlock, and no request is dropped.
"""
from __future__ import annotations

import itertools
from collections import deque
from typing import Callable, Optional, Sequence as Seq

from mii_core.config.engine import StateManagerConfig
from mii_core.kv_cache.manager import KVCacheManager, SchedulingResult
from mii_core.scheduler.plan import StepPlan
from mii_core.scheduler.sequence import Sequence, SequenceStatus


RestartLength = Callable[[int], Optional[int]]


class Scheduler:
    def __init__(self, kv: KVCacheManager, limits: StateManagerConfig,
                 restart_length: Optional[RestartLength] = None) -> None:
        self.kv, self.limits = kv, limits  # kv: read it freely, change it only through the scheduler
        # the model's restart_length(prompt length) -> the sequence length at which its cache must be recomputed
        self.restart_length = restart_length
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # in admission order, oldest first
        self.num_preemptions = 0  # observable, so tests can prove the preemption path ran
        self.num_restarts = 0  # likewise for sequences recomputed at the model's restart_length
        self.by_priority = limits.scheduling_policy == "priority"
        self._arrivals = itertools.count()

    # -- requests ----------------------------------------------------------------------------------------
    def check_fits(self, seq: Sequence) -> None:
        """Raises ValueError if ``seq`` could never fit the KV cache alone (safe from any thread)."""
        needed, capacity = len(seq.prompt_ids) + seq.max_new_tokens, self.kv.capacity_tokens
        if needed > capacity:
            raise ValueError(f"a request of {len(seq.prompt_ids)} prompt + {seq.max_new_tokens} new tokens needs "
                             f"more KV cache than the engine has ({capacity} tokens); lower "
                             "max_new_tokens / max_length or give the KV cache more memory (memory_config)")
        if seq.options.priority != 0 and not self.by_priority:
            raise ValueError(f"priority takes effect only in an engine with inference_engine_config "
                             f"{{'state_manager': {{'scheduling_policy': 'priority'}}}}; this one serves first come, "
                             f"first served (got priority {seq.options.priority}; leave it 0)")

    def add(self, seq: Sequence) -> None:
        self.check_fits(seq)
        seq.arrival = next(self._arrivals)
        self._enqueue(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def finish(self, seq: Sequence, reason: str) -> None:
        """``seq`` is done (stopped, or cancelled by its caller): it leaves the batch, its blocks are freed."""
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
            self._free(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        seq.finish_reason, seq.status = reason, SequenceStatus.FINISHED

    def abort_all(self) -> None:
        """Drops every sequence and frees its blocks (after a failed step: start clean)."""
        for seq in self.running:
            self._free(seq)
        self.running.clear()
        self.waiting.clear()

    # -- one step ----------------------------------------------------------------------------------------
    def schedule(self) -> StepPlan:
        rows: list[tuple[Sequence, int]] = []
        preempted: list[Sequence] = []
        while True:
            budget = self._schedule_decodes(rows, preempted, self.limits.max_ragged_batch_size)
            self._schedule_prefills(rows, budget)
            if rows or not self.running:
                return self._plan(rows, preempted)
            self._preempt(self._victim(), preempted)  # stuck: free the newest so the oldest can move

    def commit(self, plan: StepPlan) -> list[Sequence]:
        """After the runner computed ``plan``: its tokens count as cached. Returns the planned sequences
        with nothing left to compute (a finished prompt or a decode), whose logits are sampled."""
        for uid, tokens in zip(plan.uids, plan.token_lists):
            self.kv.commit(uid, list(tokens))
        return [seq for seq in plan.seqs if seq.num_pending == 0]

    def plan_ahead(self, seqs: list[Sequence]) -> Optional[StepPlan]:
        """A decode step of one more token for each of ``seqs`` (all running), planned before their last
        tokens are read (async scheduling): None unless it fits now with no preemption. Its tokens are
        counted with :meth:`commit_ahead` once read."""
        uids = [seq.uid for seq in seqs]
        if any(self._needs_restart(seq) for seq in seqs):
            return None
        if self.kv.can_schedule(uids, [1] * len(uids)) is not SchedulingResult.Success:
            return None
        rows = [(seq, 1) for seq in seqs]
        for seq in seqs:
            self.kv.reserve(seq.uid, 1)
        plan = self._plan(rows, [], pending=False)
        return plan

    def commit_ahead(self, seq: Sequence, token: int) -> None:
        """``seq``'s token that a step planned ahead was fed, now read: it counts as cached from here on."""
        self.kv.commit(seq.uid, [token])

    def _plan(self, rows: list[tuple[Sequence, int]], preempted: list[Sequence], pending: bool = True) -> StepPlan:
        """``pending``: each row's tokens are its next uncomputed ones (else placeholders, fed on the device)."""
        seqs = tuple(seq for seq, _ in rows)
        states = [seq.kv for seq in seqs]
        tokens = tuple(seq.token_slice(seq.num_computed, n) if pending else [0] * n for seq, n in rows)
        full = tuple(seq.scores_prompt for seq in seqs)
        return StepPlan(uids=tuple(seq.uid for seq in seqs), token_lists=tokens,
                        cached=tuple(s.cached for s in states), block_tables=tuple(s.blocks for s in states),
                        prompt_lens=tuple(s.prompt_length for s in states), seqs=seqs, preempted=tuple(preempted),
                        full_logits=full if any(full) else ())

    def _room(self, rows: list, budget: int) -> bool:
        return budget > 0 and len(rows) < self.limits.max_ragged_sequence_count

    def _schedule_decodes(self, rows: list, preempted: list[Sequence], budget: int) -> int:
        for seq in [s for s in self._in_precedence() if s.num_pending == 1]:
            if seq.status is not SequenceStatus.RUNNING:
                continue  # preempted earlier in this loop
            if self._needs_restart(seq):
                seq.restarted_prompt_length = seq.num_tokens
                self.num_restarts += 1
                self._requeue(seq, preempted)
                continue
            if not self._room(rows, budget):
                break
            while self.kv.blocks_needed(seq.uid, 1) > self.kv.free_blocks:
                victim = self._victim()  # never one already planned: they go before seq
                self._preempt(victim, preempted)
                if victim is seq:
                    break
            if seq.status is SequenceStatus.RUNNING:
                self.kv.reserve(seq.uid, 1)  # take the block now so later checks see it gone
                rows.append((seq, 1))
                budget -= 1
        return budget

    def _schedule_prefills(self, rows: list, budget: int) -> None:
        for seq in [s for s in self._in_precedence() if s.num_pending > 1]:
            if not self._room(rows, budget):
                return
            count, _ = self.kv.query(seq.uid, min(seq.num_pending, budget), self.kv.free_blocks)
            if count > 0:
                self.kv.reserve(seq.uid, count)
                rows.append((seq, count))
                budget -= count
        while self.waiting and self._room(rows, budget) and len(self.running) < self.limits.max_tracked_sequences:
            count = self._admit(self.waiting[0], budget)
            if count == 0:
                return  # FCFS: later arrivals do not overtake the head
            seq = self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            rows.append((seq, count))
            budget -= count

    def _admit(self, seq: Sequence, budget: int) -> int:
        """Takes blocks for the first chunk of the queue head's prompt (a cached prefix adopted first);
        returns the chunk's length, or 0 when its whole remaining prompt (or, under a sliding window, the
        most blocks it holds, fed in chunks) does not fit the free blocks yet."""
        prompt_length = seq.cache_prompt_length
        # a sequence scoring its prompt computes every position it has not scored yet, as vLLM skips the
        # prefix cache for prompt_logprobs: cached blocks would leave a gap in its scores
        if not seq.scores_prompt:
            seq.kv = self.kv.adopt_prefix(seq.uid, seq.token_slice(0, seq.num_tokens), prompt_length)
        free = self.kv.free_blocks
        if self.kv.admission_blocks(seq.uid, seq.num_pending) > free:
            self._free(seq)  # give any adopted prefix back until it can run
            return 0
        count = min(seq.num_pending, budget, self.kv.tokens_fitting(seq.uid, free))
        # the original prompt's length, whatever the first chunk holds (a chunk, or prompt + output
        # when recomputed after a preemption): the model may make every token depend on it
        seq.kv = self.kv.reserve(seq.uid, count, prompt_length)
        return count

    def _preempt(self, seq: Sequence, preempted: list[Sequence]) -> None:
        """Drops ``seq``'s cached state; everything so far is recomputed as one long prompt later."""
        self.num_preemptions += 1
        self._requeue(seq, preempted)

    def _requeue(self, seq: Sequence, preempted: list[Sequence]) -> None:
        self.running.remove(seq)
        self._free(seq)
        seq.status = SequenceStatus.WAITING
        self._enqueue(seq, first=True)
        preempted.append(seq)

    def _enqueue(self, seq: Sequence, first: bool = False) -> None:
        """Into the waiting queue: at its end (``first``: its head, a preempted sequence going on first) or,
        under the priority policy, before the first waiting sequence of larger precedence."""
        if self.by_priority:
            place = next((i for i, other in enumerate(self.waiting) if other.precedence > seq.precedence),
                         len(self.waiting))
            self.waiting.insert(place, seq)
        elif first:
            self.waiting.appendleft(seq)
        else:
            self.waiting.append(seq)

    def _in_precedence(self) -> list[Sequence]:
        """The running sequences in the order they are served: admission order, or by precedence."""
        return sorted(self.running, key=lambda seq: seq.precedence) if self.by_priority else list(self.running)

    def _victim(self) -> Sequence:
        """The running sequence preempted first: the one served last."""
        return max(self.running, key=lambda seq: seq.precedence) if self.by_priority else self.running[-1]

    def _needs_restart(self, seq: Sequence) -> bool:
        """Its next decode reaches the model's restart length for the prompt length its cache is keyed by."""
        if self.restart_length is None or seq.kv is None:
            return False
        keyed_by = seq.kv.prompt_length
        length = self.restart_length(keyed_by)
        return length is not None and keyed_by < length <= seq.num_tokens

    def _free(self, seq: Sequence) -> None:
        self.kv.flush(seq.uid)
        seq.kv = None

    # -- FastGen's calls, for a caller that plans its own steps (InferenceEngine.put / flush) ------------
    def plan_tokens(self, uids: Seq[int], token_lists: Seq[Seq[int]],
                    prompt_lengths: Optional[Seq[int]] = None) -> StepPlan:
        """Reserves blocks for ``token_lists[i]`` appended to ``uids[i]`` (new uids start tracking) and
        plans them as one step. A sequence's prompt length is fixed once: ``prompt_lengths[i]``, else the
        length its first put brings it to."""
        if prompt_lengths is None:
            prompt_lengths = [self.kv.get(uid).cached + len(t) for uid, t in zip(uids, token_lists)]
        states = [self.kv.reserve(uid, len(tokens), n) for uid, tokens, n in zip(uids, token_lists, prompt_lengths)]
        return StepPlan(uids=tuple(uids), token_lists=tuple(token_lists), cached=tuple(s.cached for s in states),
                        block_tables=tuple(s.blocks for s in states), prompt_lens=tuple(s.prompt_length for s in states))

    def free(self, uid: int) -> None:
        """Forgets ``uid`` (a caller's own sequence, not one this scheduler runs) and frees its blocks."""
        self.kv.flush(uid)
