"""One thread that moves every streamed generation of a replica from its engine to its link connection.

With a thread per request, each engine step woke every request's thread (W1 sends 256 at once), and 256
threads queued for the GIL the engine's loop thread needs between its kernels: the H200 run of 2026-12-02
served W1 through either front end at 51% of the pipeline's output tok/s. Here the loop thread only sets
one flag per step (``StreamPump.wake``, through ``ResponseStream.watch``); the pump then drains each
stream's ready events without blocking and hands them to the stream's sink, and the request's own
connection thread just waits on its socket, which tells it whether the caller left (a cancel).
"""
from __future__ import annotations

import logging
import os
import select
import threading
from typing import Any, Callable, Iterator, Optional

from mii_core.serving.backend import ResponseStream

log = logging.getLogger("mii_core.serving.stream_pump")
IDLE_WAKE_SECONDS = 0.5  # a missed wake costs at most this (none is expected: see wake)
RETRY_BLOCKED_SECONDS = 0.005  # how soon the pump looks again at a stream whose caller was not writable
_END = object()  # what the pump takes from a stream's events once they are over


class PumpedStream:
    """One stream on the pump: its events (STARTED or a Chunk) go to ``deliver`` whenever ``writable()`` says
    the caller's connection can take a message without blocking (a caller that reads slowly holds back only
    its own stream: the events it misses meanwhile are joined into fewer, larger pieces); a ``deliver`` that
    raises OSError or EOFError means the caller is gone, and the request is cancelled. Once the stream is
    over, ``outcome`` says how ("done", "error" with ``error``, or "gone") and ``finished`` is set; the
    request's own thread sends the last message, so a large answer never holds the pump up."""

    def __init__(self, stream: ResponseStream, deliver: Callable[[Any], None], writable: Callable[[], bool]) -> None:
        self.stream, self._deliver, self._writable = stream, deliver, writable
        self._events: Iterator[Any] = stream.events(poll_interval=0.0)
        self._pending: Any = None  # an event taken from the stream, waiting for the caller to be writable
        self.finished = threading.Event()
        self._ended_r, self._ended_w = os.pipe()  # a byte once finished: wakes the thread polling the caller
        self.outcome: Optional[str] = None
        self.error: Optional[BaseException] = None
        self._cancel_asked = False

    def cancel(self) -> None:
        """The caller left: the pump cancels the request at its next pass (wake it)."""
        self._cancel_asked = True

    def pump(self) -> Optional[bool]:
        """Sends what is ready: True to keep the stream, None to keep it as its caller is not writable (retry
        soon), False once it is over (``finished`` set)."""
        if self.finished.is_set():  # over already: its pipe may be closed, never touch it again
            return False
        try:
            if self._cancel_asked:
                raise EOFError("the caller left")
            while True:
                if self._pending is None:
                    self._pending = next(self._events, _END)
                if self._pending is None:  # nothing more ready now
                    return True
                if self._pending is _END:
                    return self._finish("done")
                if not self._writable():
                    return None
                event, self._pending = self._pending, None
                self._deliver(event)
        except (OSError, EOFError):
            self.stream.cancel()  # the caller is gone: free the engine for others
            return self._finish("gone")
        except Exception as exc:
            self.error = exc
            return self._finish("error")

    def fail(self, error: BaseException) -> None:
        """Ends the stream with ``error`` for its caller (the pump itself failed), unless it is over already."""
        if not self.finished.is_set():
            self.stream.cancel()
            self.error = error
            self._finish("error")

    def _finish(self, outcome: str) -> bool:
        self.outcome = outcome
        self._events.close()  # a stream left mid-way lets go of what it holds now
        os.write(self._ended_w, b"x")  # before finished: once that is set, the request's thread closes the pipe
        self.finished.set()
        return False

    def wait_end_or_caller(self, caller_fd: int) -> bool:
        """Blocks until the stream is over (True) or the caller's socket turns readable first (False: it
        closed it, a cancel)."""
        poller = select.poll()
        poller.register(self._ended_r, select.POLLIN)
        poller.register(caller_fd, select.POLLIN)
        return self._ended_r in {fd for fd, _ in poller.poll()}

    def close(self) -> None:
        """Frees the wake-up pipe, once ``finished`` (the pump writes to it until then)."""
        os.close(self._ended_r)
        os.close(self._ended_w)



class StreamPump:
    """The pump thread of one link server (started on the first stream)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._added: list[PumpedStream] = []
        self._thread: Optional[threading.Thread] = None

    def wake(self) -> None:
        """Called by the engine's loop thread after it posts events (held back, while a step launched ahead
        computes, until the loop blocks on the device: EngineService.wake_soon): cheap when already awake. A
        post that sees the flag set needs no set of its own: the pump clears it before draining, so it
        drains that event too."""
        if not self._wake.is_set():
            self._wake.set()

    def add(self, pumped: PumpedStream) -> None:
        with self._lock:
            self._added.append(pumped)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"{self._name}-pump", daemon=True)
                self._thread.start()
        self.wake()

    def _run(self) -> None:
        active: list[PumpedStream] = []
        wait = IDLE_WAKE_SECONDS
        while True:
            self._wake.wait(wait)
            self._wake.clear()
            with self._lock:
                active.extend(self._added)
                self._added.clear()
            try:
                kept = [(pumped, pumped.pump()) for pumped in active]
            except Exception as exc:  # a bug here must not leave a stream hanging: each caller hears the error
                log.exception("%s: the stream pump failed; ending its streams", self._name)
                for pumped in active:
                    pumped.fail(RuntimeError(f"the replica's stream pump failed: {exc}"))
                kept = []
            active = [pumped for pumped, keep in kept if keep is not False]
            wait = RETRY_BLOCKED_SECONDS if any(keep is None for _, keep in kept) else IDLE_WAKE_SECONDS
