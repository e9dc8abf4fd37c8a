"""The step loop: scheduler → ragged batch → model forward → logits → sampler → finished sequences."""
from __future__ import annotations

from typing import Callable, Optional

from mii_core.engine.inference_engine import InferenceEngine
from mii_core.sampling.sampler import Sampler
from mii_core.sampling.stopping import StopChecker
from mii_core.scheduler.sequence import Sequence, SequenceStatus
from mii_core.scheduler.splitfuse import Scheduler


class GenerationLoop:
    def __init__(self, engine: InferenceEngine, sampler: Sampler, stopper: StopChecker) -> None:
        self.engine, self.sampler, self.stopper = engine, sampler, stopper
        self.scheduler = Scheduler(engine, engine.config)
        # The sequences of the step under way: an error raised by step() hit exactly these, so a caller
        # that keeps serving (the engine service) fails their requests and no others.
        self.in_flight: list[Sequence] = []

    def check_fits(self, seq: Sequence) -> None:
        """Raises ValueError if ``seq`` could never fit the KV cache alone (safe from any thread)."""
        needed = len(seq.prompt_ids) + seq.max_new_tokens
        if needed > self.engine.capacity_tokens:
            raise ValueError(f"a request of {len(seq.prompt_ids)} prompt + {seq.max_new_tokens} new tokens needs "
                             f"more KV cache than the engine has ({self.engine.capacity_tokens} tokens); lower "
                             "max_new_tokens / max_length or give the KV cache more memory (memory_config)")

    def add(self, seq: Sequence) -> None:
        self.check_fits(seq)
        self.scheduler.add(seq)

    def cancel(self, seq: Sequence) -> None:
        """Takes an unfinished ``seq`` out of the batch between steps; its KV blocks are freed now."""
        if seq.status is SequenceStatus.RUNNING:
            self.scheduler.finish(seq)
        elif seq in self.scheduler.waiting:
            self.scheduler.waiting.remove(seq)
        seq.finish_reason = "cancelled"
        seq.status = SequenceStatus.FINISHED

    def step(self) -> list[Sequence]:
        """Runs one forward pass; returns the sequences that finished in it."""
        self.in_flight = []
        plan = self.scheduler.schedule()
        self.in_flight = plan.seqs
        if not plan.seqs:
            return []
        token_lists = [seq.token_slice(seq.num_computed, n) for seq, n in zip(plan.seqs, plan.num_tokens)]
        logits = self.engine.put([seq.uid for seq in plan.seqs], token_lists)
        ready_rows = []
        for row, (seq, count) in enumerate(zip(plan.seqs, plan.num_tokens)):
            seq.num_computed += count
            if seq.num_pending == 0:  # only the last chunk of a prompt (or a decode) yields a token
                ready_rows.append(row)
        if not ready_rows:
            return []
        ready = [plan.seqs[r] for r in ready_rows]
        rows = logits if len(ready_rows) == len(plan.seqs) else logits[ready_rows]
        finished = []
        for seq, token in zip(ready, self.sampler(rows, ready)):
            seq.generated_ids.append(token)
            reason = self.stopper.check(seq)
            if reason is not None:
                self._finish(seq, reason)
                finished.append(seq)
        return finished

    def run(self, seqs: list[Sequence], on_finish: Optional[Callable[[Sequence], None]] = None) -> None:
        """Runs until every given sequence finished. On an error, drops all state so the engine
        can serve the next call, then re-raises."""
        try:
            for seq in seqs:
                self.add(seq)
            remaining = len(seqs)
            while remaining:
                done = self.step()
                if not done and not self.scheduler.has_work():
                    raise RuntimeError("scheduler ran dry with unfinished sequences (engine bug)")
                remaining -= len(done)
                for seq in done:
                    if on_finish:
                        on_finish(seq)
        except BaseException:
            self.abort_all()
            raise

    def _finish(self, seq: Sequence, reason: str) -> None:
        seq.finish_reason = reason
        seq.status = SequenceStatus.FINISHED
        self.scheduler.finish(seq)

    def abort_all(self) -> None:
        for seq in list(self.scheduler.running):
            self.scheduler.finish(seq)
        self.scheduler.waiting.clear()
