"""The step loop: scheduler → ragged batch → model forward → logits → sampler → finished sequences.

With ``overlap`` (async scheduling), once every running sequence is a greedy decode and nothing waits,
the loop launches decode step n+1 fed with step n's tokens still on the device, and only then reads step
n's tokens: the host's work (reading tokens, stop checks, the next step's inputs) runs while the device
computes. A sequence that turns out to have finished at step n wastes its row of step n+1, nothing more:
its KV blocks are freed and step n+1's write into them is ordered before any later use. Anything else
(a new request, a prompt chunk, a sampled row, a full cache) drains the step in flight and the next
step is planned as usual.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from mii_core.engine.inference_engine import InferenceEngine
from mii_core.engine.prompt_scoring import score_prompt_chunks
from mii_core.sampling.protocol import TokenSampler
from mii_core.sampling.stopping import StopChecker
from mii_core.scheduler.plan import StepPlan
from mii_core.scheduler.sequence import Sequence, SequenceStatus


@dataclass(slots=True)
class _Ahead:
    """A decode step launched before the host read the tokens it was fed."""
    seqs: list[Sequence]  # its rows; some may have finished or been cancelled since
    tokens: torch.Tensor  # [len(seqs)] its greedy samples, on the device, not read yet


def _start_reading(tokens: torch.Tensor) -> Callable[[], list[int]]:
    """Starts copying ``tokens`` to the host now and returns the call that waits for them. A plain
    ``.tolist()`` later would queue its copy behind every kernel launched meanwhile."""
    if not tokens.is_cuda:
        return tokens.tolist
    host = torch.empty(tokens.shape, dtype=tokens.dtype, pin_memory=True)
    host.copy_(tokens, non_blocking=True)
    copied = torch.cuda.Event()
    copied.record()

    def wait() -> list[int]:
        copied.synchronize()
        return host.tolist()

    return wait


def _nothing() -> None:
    pass


class GenerationLoop:
    def __init__(self, engine: InferenceEngine, sampler: TokenSampler, stopper: StopChecker,
                 overlap: bool = False, isolate_failures: bool = False) -> None:
        """``isolate_failures``: a sampling or stop check that fails for one sequence fails that sequence
        alone (finished with reason "error" and its ``error``), not the step; only where rows are
        independent (one rank: under tensor parallelism rank 0's sampling is part of the lockstep)."""
        self.engine, self.sampler, self.stopper = engine, sampler, stopper
        self.scheduler, self.runner = engine.scheduler, engine.runner
        self.overlap, self.isolate_failures = overlap, isolate_failures
        self._ahead: Optional[_Ahead] = None
        self._before_device_wait: Callable[[], None] = _nothing
        self.num_steps_ahead = 0  # observable, so tests can prove the overlapped path ran
        # The sequences of the step under way: an error raised by step() hit exactly these, so a caller
        # that keeps serving (the engine service) fails their requests and no others.
        self.in_flight: list[Sequence] = []

    def call_before_device_wait(self, hook: Callable[[], None]) -> None:
        """``hook()`` runs each time the loop, a step launched ahead and computing, is about to block until
        the device hands it the tokens of the step before: the host has slack there, so work of other
        threads that would otherwise take the GIL from the loop's planning and launching best starts then."""
        self._before_device_wait = hook

    @property
    def step_in_flight(self) -> bool:
        """A step launched ahead is computing: the next ``step()`` launches another or reads it."""
        return self._ahead is not None

    def check_fits(self, seq: Sequence) -> None:
        """Raises ValueError if ``seq`` could never fit the KV cache alone (safe from any thread)."""
        self.scheduler.check_fits(seq)

    def add(self, seq: Sequence) -> None:
        self.scheduler.add(seq)

    def cancel(self, seq: Sequence) -> None:
        """Takes an unfinished ``seq`` out of the batch between steps; its KV blocks are freed now."""
        self.scheduler.finish(seq, "cancelled")

    def step(self) -> list[Sequence]:
        """Runs one forward pass; returns the sequences that finished in it."""
        if self._ahead is not None:
            return self._step_ahead()
        self.in_flight = []
        plan = self.scheduler.schedule()
        self.in_flight = list(plan.seqs)
        if not plan.seqs:
            return []
        logits = score_prompt_chunks(self.runner.run(plan), plan)  # now each row's last token's
        ready = self.scheduler.commit(plan)  # only the last chunk of a prompt (or a decode) yields a token
        if not ready:
            return []
        rows = logits if len(ready) == len(plan.seqs) else logits[[i for i, s in enumerate(plan.seqs)
                                                                     if s.num_pending == 0]]
        ahead = self._plan_ahead(ready, unread=0) if len(ready) == len(plan.seqs) else None
        if ahead is not None:
            return self._launch_ahead_then_read(ahead, ready, rows.argmax(dim=-1))
        tokens = self._sample(rows, ready)
        self._record_logprobs(rows, ready, tokens)
        return self._take(ready, tokens, fed_ahead=False)

    def _plan_ahead(self, seqs: list[Sequence], unread: int) -> Optional[StepPlan]:
        """The next decode step of ``seqs``, planned before their tokens are read, when every running
        sequence decodes next, nothing waits, the tokens fed ahead are greedy (``unread``: tokens sampled
        but not yet read; the next ones then are greedy too) and the KV cache has room; else None."""
        if not (self.overlap and not self.scheduler.waiting and len(seqs) == len(self.scheduler.running)
                and self.sampler.all_greedy(seqs, unread)):
            return None
        return self.scheduler.plan_ahead(seqs)

    def _launch_ahead_then_read(self, plan: StepPlan, seqs: list[Sequence], tokens: torch.Tensor) -> list[Sequence]:
        """Launches ``plan``, the next decode step, fed with ``tokens`` (this step's samples, on the device),
        then reads them while it runs."""
        read = _start_reading(tokens)  # queued before the next step, so the copy does not wait for it
        logits = self.runner.run(plan, device_tokens=tokens)
        self.num_steps_ahead += 1
        self._ahead = _Ahead(seqs, logits.argmax(dim=-1))
        self.in_flight = seqs
        self._before_device_wait()
        return self._take(seqs, read(), fed_ahead=True)

    def _step_ahead(self) -> list[Sequence]:
        """The step in flight: continue ahead with it, or read its tokens and plan normally next."""
        ahead, self._ahead = self._ahead, None
        rows = [i for i, seq in enumerate(ahead.seqs) if seq.status is SequenceStatus.RUNNING]
        seqs = [ahead.seqs[i] for i in rows]
        self.in_flight = seqs
        if not seqs:
            return []
        tokens = ahead.tokens if len(rows) == len(ahead.seqs) else ahead.tokens[self._on_device(rows, ahead)]
        plan = self._plan_ahead(seqs, unread=1)
        if plan is not None:
            return self._launch_ahead_then_read(plan, seqs, tokens)
        self._before_device_wait()
        return self._take(seqs, tokens.tolist(), fed_ahead=False)

    @staticmethod
    def _on_device(rows: list[int], ahead: _Ahead) -> torch.Tensor:
        index = torch.tensor(rows, dtype=torch.int64)
        if ahead.tokens.is_cuda:  # pinned and non-blocking: the host does not wait for the device here
            index = index.pin_memory().to(ahead.tokens.device, non_blocking=True)
        return index

    def _sample(self, logits: torch.Tensor, seqs: list[Sequence]) -> list[Optional[int]]:
        """The sampler's token for each row. Isolating failures, a batch the sampler fails on is sampled
        again a row at a time (the error path only), and a row that fails alone gets None and its error."""
        try:
            return self.sampler(logits, seqs)
        except Exception:
            if not self.isolate_failures:
                raise
        tokens: list[Optional[int]] = []
        for row, seq in enumerate(seqs):
            try:
                tokens.extend(self.sampler(logits[row:row + 1], [seq]))
            except Exception as exc:
                seq.error = exc
                tokens.append(None)
        return tokens

    def _record_logprobs(self, logits: torch.Tensor, seqs: list[Sequence], tokens: list[Optional[int]]) -> None:
        """Each sampled row's log-probabilities, kept by the sequences that asked for them (a row whose
        sampling failed has none)."""
        rows = [i for i, token in enumerate(tokens) if token is not None]
        if len(rows) < len(tokens):
            logits, seqs, tokens = logits[rows], [seqs[i] for i in rows], [tokens[i] for i in rows]
        for seq, logprob in zip(seqs, self.sampler.logprobs(logits, seqs, tokens)):
            if logprob is not None:
                seq.logprobs.append(logprob)

    def _stop_reason(self, seq: Sequence) -> Optional[str]:
        """Why ``seq`` stops after its new token (None: it goes on); "error" when isolating a failure."""
        if seq.error is not None:  # its sampling failed
            return "error"
        try:
            return self.stopper.check(seq)
        except Exception as exc:
            if not self.isolate_failures:
                raise
            seq.error = exc
            return "error"

    def _take(self, seqs: list[Sequence], tokens: list[Optional[int]], fed_ahead: bool) -> list[Sequence]:
        """Appends each sequence's new token and checks whether it stops. ``fed_ahead``: the token is
        already fed to the step in flight, so it counts as computed unless the sequence stopped."""
        finished = []
        for seq, token in zip(seqs, tokens):
            if token is not None:
                seq.generated_ids.append(token)
            reason = self._stop_reason(seq)
            if reason is not None:
                self._finish(seq, reason)
                finished.append(seq)
            elif fed_ahead:
                self.scheduler.commit_ahead(seq, token)
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
                    if seq.error is not None:
                        raise seq.error
                    if on_finish:
                        on_finish(seq)
        except BaseException:
            self.abort_all()
            raise

    def _finish(self, seq: Sequence, reason: str) -> None:
        self.scheduler.finish(seq, reason)

    def abort_all(self) -> None:
        self._ahead = None
        self.scheduler.abort_all()
