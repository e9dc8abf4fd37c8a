"""The engine service: one loop thread owns the engine; callers on any thread submit requests.

A :class:`GenerationLoop` is not thread-safe, and a server needs the engine busy with every caller's
requests at once. So the loop thread is the only code that touches the engine, the scheduler and the
sequences' KV state, and callers talk to it through a queue:

- ``submit`` checks a request in the caller's thread (its errors raise there) and queues it; the loop
  adds it to the scheduler before the next step, so it joins the running batch (continuous batching
  across callers and clients);
- after every step the loop posts each request's new tokens to that request's own queue; the caller
  reads them as text pieces (:meth:`RequestStream.chunks`) or waits for the end (``result``). A caller
  that serves many streams from one thread (a replica's stream pump) is woken through ``wake_soon``:
  while a step launched ahead computes, its wake waits until the loop has planned and launched the next
  step and blocks on the device, so that thread's Python runs in the host's slack, not in the GIL's queue
  in front of the loop's own work;
- ``cancel`` queues a cancel; before the next step the loop takes the request's sequences out of the
  batch and frees their KV blocks;
- an exception inside a step fails the requests whose sequences were in that step, with that
  exception; the loop keeps serving the others.

Under tensor parallelism (``lockstep=True``) the loop is rank 0's :class:`~mii_core.serving.lockstep.LockstepLoop`:
while idle the service sends the other ranks a heartbeat every ``HEARTBEAT_SECONDS``; a failed step or
heartbeat (a rank lost, or ranks whose states may now differ) stops the service and fails every
request with ``Unavailable(explain_stop(cause))``; ``close`` stops the other ranks too.
"""
from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from typing import Callable, Optional

from mii_core.engine.generation_loop import GenerationLoop
from mii_core.scheduler.sequence import Sequence, SequenceStatus
from mii_core.serving.errors import QueueFull, RequestCancelled, Unavailable
from mii_core.serving.lockstep import HEARTBEAT_SECONDS
from mii_core.serving.stream import RequestStream

log = logging.getLogger(__name__)
_STOP = object()


@dataclass(slots=True, eq=False)
class _Entry:
    """One sequence the loop is running for a request."""

    request: RequestStream
    index: int
    seq: Sequence
    delivered: int = 0  # generated tokens already posted to the request


@dataclass
class ServiceStats:
    served: int = 0
    cancelled: int = 0
    failed: int = 0


class EngineService:
    def __init__(self, loop: GenerationLoop, max_queued_requests: Optional[int] = None,
                 name: str = "mii-core-engine", lockstep: bool = False,
                 explain_stop: Optional[Callable[[Exception], str]] = None) -> None:
        self.loop, self.lockstep = loop, lockstep
        self.explain_stop = explain_stop or (lambda exc: f"the engine stopped: {exc}")
        self.fatal_error: Optional[Unavailable] = None  # set when a lockstep failure stopped the service
        self.stopped = threading.Event()
        self.max_queued_requests = max_queued_requests
        self.stats = ServiceStats()
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._entries: list[_Entry] = []
        self._unstarted = 0  # requests accepted whose sequences have not entered the batch yet
        self._lock = threading.Lock()
        self._closed = False
        self._held_wakes: dict[Callable[[], None], None] = {}  # an ordered set: one pump's wake, typically
        self._holding_wakes = False  # set while the loop posts with a step ahead computing
        loop.call_before_device_wait(self._release_wakes)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # ---- callers' side (any thread) ----
    def submit(self, request: RequestStream) -> RequestStream:
        """Queues the request's sequences; raises if one can never run or the queue is full."""
        for seq in request.seqs:
            self.loop.check_fits(seq)
        with self._lock:
            if self._closed:
                raise self.fatal_error or Unavailable("the engine service was stopped")
            if self.max_queued_requests is not None and self._unstarted >= self.max_queued_requests:
                raise QueueFull(f"{self._unstarted} requests are already waiting (max_queued_requests="
                                f"{self.max_queued_requests}); retry later")
            self._unstarted += 1
        request.attach(self)
        self._inbox.put(("add", request))
        return request

    def cancel(self, request: RequestStream) -> None:
        self._inbox.put(("cancel", request))

    def wake_soon(self, wake: Callable[[], None]) -> None:
        """Calls ``wake`` (a stream watcher's) now, or, while the loop posts a step's events with the next
        step already computing, once the loop waits for the device (at the latest after its next step)."""
        if self._holding_wakes:
            self._held_wakes[wake] = None
        else:
            wake()

    def close(self) -> None:
        """Stops the loop; requests still in it fail with Unavailable."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._inbox.put(_STOP)
        self._thread.join(timeout=60)

    def snapshot(self) -> dict:
        """Counters and occupancy for health and metrics (reads only; safe from any thread)."""
        engine = self.loop.engine
        return {
            "running": len(self.loop.scheduler.running), "waiting": len(self.loop.scheduler.waiting),
            "queued_requests": self._unstarted,
            "kv_blocks_used": engine.scheduler.kv.num_blocks - engine.free_blocks,
            "kv_blocks_total": engine.scheduler.kv.num_blocks,
            "served": self.stats.served, "cancelled": self.stats.cancelled, "failed": self.stats.failed,
        }

    # ---- the loop thread ----
    def _run(self) -> None:
        device = self.loop.engine.device
        if device.type == "cuda":  # kernels launch on the thread's current device
            import torch

            torch.cuda.set_device(device)
        try:
            self._serve()
        except Exception as exc:  # lockstep only: a rank lost, or ranks that may have diverged
            log.exception("the engine service stopped")
            self._stop_fatally(exc)
        finally:
            self.stopped.set()

    def _serve(self) -> None:
        while True:
            idle = not self.loop.scheduler.has_work()
            if idle:
                self._release_wakes()
            if not self._take_inbox(block=idle):
                return
            if not self.loop.scheduler.has_work():
                continue
            try:
                self.loop.step()
            except Exception as exc:  # a bad step must not take the other requests down with it
                if self.lockstep:
                    raise  # the other ranks' states are unknown now: nothing can be served
                log.exception("engine step failed; failing the requests in that step")
                self._fail_step(exc)
            self._release_wakes()  # the last step's, if the loop did not wait for the device in this one
            self._publish_holding_wakes()

    def _publish_holding_wakes(self) -> None:
        self._holding_wakes = self.loop.step_in_flight
        try:
            self._publish()
        finally:
            self._holding_wakes = False

    def _release_wakes(self) -> None:
        if self._held_wakes:
            held, self._held_wakes = self._held_wakes, {}
            for wake in list(held):
                wake()

    def _take_inbox(self, block: bool) -> bool:
        """Applies queued adds and cancels; False once the service is stopping."""
        item = self._next_item(block)
        if item is None:
            return True
        while True:
            if item is _STOP:
                self._fail_requests({e.request for e in self._entries}, Unavailable("the engine service was stopped"))
                if self.lockstep:
                    self.loop.stop_followers()
                return False
            action, request = item
            if action == "add":
                self._add(request)
            else:
                self._cancel(request)
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return True

    def _next_item(self, block: bool):
        """The next queued item, or None; under lockstep an idle wait sends heartbeats meanwhile."""
        while True:
            try:
                if not block:
                    return self._inbox.get_nowait()
                return self._inbox.get(timeout=HEARTBEAT_SECONDS if self.lockstep else None)
            except queue.Empty:
                if not block:
                    return None
                self.loop.heartbeat()

    def _stop_fatally(self, exc: Exception) -> None:
        with self._lock:
            self._closed = True
            self.fatal_error = Unavailable(self.explain_stop(exc))
        self._fail_requests({e.request for e in self._entries}, self.fatal_error)
        self._fail_queued(self.fatal_error)

    def _fail_queued(self, error: Exception) -> None:
        """Requests submitted but not yet taken into the loop."""
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP and item[0] == "add" and not item[1].ended:
                self.stats.failed += 1
                self._end(item[1], error)

    def _add(self, request: RequestStream) -> None:
        if request.ended:  # cancelled before the loop saw it
            return
        added = []
        try:
            for index, seq in enumerate(request.seqs):
                self.loop.add(seq)
                added.append(_Entry(request, index, seq))
        except Exception as exc:  # checked in submit(); this is a last guard so the loop survives
            for entry in added:
                self.loop.cancel(entry.seq)
            self._fail_requests({request}, exc)
            return
        self._entries.extend(added)

    def _cancel(self, request: RequestStream) -> None:
        if request.ended:
            return
        entries = [e for e in self._entries if e.request is request]
        for entry in entries:
            self.loop.cancel(entry.seq)
        self.stats.cancelled += 1
        self._end(request, RequestCancelled("the request was cancelled"))

    def _publish(self) -> None:
        """Posts each request's new tokens and finished sequences; drops finished entries. A request one
        of whose sequences failed alone fails, and its other sequences leave the batch."""
        still_running, failed = [], {}
        for entry in self._entries:
            seq, request = entry.seq, entry.request
            if seq.error is not None:
                failed.setdefault(request, seq.error)
                continue
            if request.waiting and (seq.num_computed > 0 or seq.status is not SequenceStatus.WAITING):
                self._mark_started(request)
            count = len(seq.generated_ids)
            if count > entry.delivered and request.stream_tokens:
                entry.delivered = count
                request.post_tokens(entry.index, count)
            if seq.status is SequenceStatus.FINISHED:
                if request.finish_sequence(entry.index):
                    self.stats.served += 1
                    self._end(request, None)
            else:
                still_running.append(entry)
        self._entries = still_running
        for request, error in failed.items():
            self._cancel_sequences_of(request)
            self._fail_requests({request}, error)

    def _cancel_sequences_of(self, request: RequestStream) -> None:
        for entry in self._entries:
            if entry.request is request and entry.seq.status is not SequenceStatus.FINISHED:
                self.loop.cancel(entry.seq)

    def _mark_started(self, request: RequestStream) -> None:
        with self._lock:
            self._unstarted -= 1
        request.mark_started()

    def _fail_step(self, exc: Exception) -> None:
        hit = {id(seq) for seq in self.loop.in_flight}
        if hit:
            failed = {e.request for e in self._entries if id(e.seq) in hit}
        else:  # the scheduler itself failed: its state is unknown, start clean
            failed = {e.request for e in self._entries}
        try:
            for entry in self._entries:
                if entry.request in failed and entry.seq.status is not SequenceStatus.FINISHED:
                    self.loop.cancel(entry.seq)
        except Exception:
            log.exception("could not take the failed step's sequences out; resetting the engine state")
            self.loop.abort_all()
            failed = {e.request for e in self._entries}
        self._fail_requests(failed, exc)

    def _fail_requests(self, requests: set, exc: BaseException) -> None:
        for request in requests:
            self.stats.failed += 1
            self._end(request, exc)

    def _end(self, request: RequestStream, error: Optional[BaseException]) -> None:
        """The request leaves the loop: finished (error None), cancelled or failed."""
        if request.waiting:  # it will never start: it no longer counts as queued
            with self._lock:
                self._unstarted -= 1
        if error is not None:
            self._entries = [e for e in self._entries if e.request is not request]
        request.end(error)
