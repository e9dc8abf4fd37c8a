"""Dynamic batching: queries from concurrent clients wait a short while to fill a batch, then run in one
forward pass padded to one of a few bucketed lengths (a handful of shapes, so CUDA graphs or kernel
autotuning see few). Each query gets its own future; a failure fails only the queries it concerns.

The wait is paid only under load: after a batch of one (a lone client), the next query runs at once with
whatever else is already queued, so one client's latency is the model's, not the model's plus the wait;
a batch of several makes the next one wait again."""
from __future__ import annotations

import bisect
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Sequence

from mii_core.legacy.task import Prepared, TaskModel

log = logging.getLogger(__name__)
_STOP = object()


def bucket_length(length: int, buckets: Sequence[int]) -> int:
    """The smallest bucket holding ``length`` tokens (``buckets`` sorted, the last one the model's limit)."""
    index = bisect.bisect_left(buckets, length)
    if index == len(buckets):
        raise ValueError(f"{length} tokens exceed the longest bucket ({buckets[-1]})")
    return buckets[index]


def length_buckets(requested: Sequence[int], max_length: int) -> list[int]:
    """The configured buckets below the model's limit, and the limit itself as the last one."""
    return sorted({b for b in requested if b < max_length} | {max_length})


@dataclass(slots=True)
class _Waiting:
    prepared: Prepared
    future: Future


class DynamicBatcher:
    """One worker thread runs ``model``'s batches; ``submit`` may be called from any thread."""

    def __init__(self, model: TaskModel, *, max_batch_size: int, wait_s: float, buckets: Sequence[int]) -> None:
        self.model = model
        self.max_batch_size = max_batch_size
        self.wait_s = wait_s
        self.buckets = length_buckets(buckets, model.max_length)
        self.batch_sizes: list[int] = []  # how many queries each forward pass held (for tests and tuning)
        self._under_load = True  # the first batch waits: clients starting together share it
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=f"mii-legacy-{model.task}", daemon=True)
        self._closed = False
        self._thread.start()

    def submit(self, prepared: Prepared) -> Future:
        if self._closed:
            raise RuntimeError("this deployment was terminated")
        waiting = _Waiting(prepared, Future())
        self._queue.put(waiting)
        return waiting.future

    def close(self) -> None:
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            batch, stop = self._next_batch()
            if batch:
                self._run(batch)
            if stop:
                return

    def _next_batch(self) -> tuple[list[_Waiting], bool]:
        """Blocks for a first query, then gathers more until the batch is full or the wait is over (no wait
        after a batch of one: only what is queued already joins)."""
        first = self._queue.get()
        if first is _STOP:
            return [], True
        wait_s = self.wait_s if self._under_load else 0.0
        batch, deadline = [first], time.monotonic() + wait_s
        while len(batch) < self.max_batch_size:
            try:
                item = self._queue.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
        self._under_load = len(batch) > 1
        return batch, False

    def _run(self, batch: list[_Waiting]) -> None:
        """One forward pass; if it fails with several queries in it, each runs alone, so a query that
        breaks the model fails only itself."""
        try:
            pad_to = bucket_length(max(w.prepared.length for w in batch), self.buckets)
            outputs = self.model.run(self.model.collate([w.prepared for w in batch], pad_to))
        except Exception as exc:  # any model error: retried one by one, or handed to its one query
            if len(batch) > 1:
                log.warning("a batch of %d failed (%s); running its queries one by one", len(batch), exc)
                for waiting in batch:
                    self._run([waiting])
            else:
                batch[0].future.set_exception(exc)
            return
        self.batch_sizes.append(len(batch))
        for row, waiting in enumerate(batch):
            try:
                waiting.future.set_result(self.model.respond(waiting.prepared, outputs, row))
            except Exception as exc:  # this query's response failed, the others are fine
                waiting.future.set_exception(exc)
