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
import threading
from typing import Any, Callable, Iterator, Optional

from mii_core.serving.backend import ResponseStream

log = logging.getLogger("mii_core.serving.stream_pump")
IDLE_WAKE_SECONDS = 0.5  # a missed wake costs at most this (none is expected: see wake)


class PumpedStream:
    """One stream on the pump: its events go to ``deliver`` (STARTED or a Chunk), then ``end(stream)`` once it
    finished, or ``fail(exc)`` if it raised; a sink that raises OSError or EOFError means the caller is gone,
    and the request is cancelled. ``finished`` is set once nothing more will be sent; ``final_sent`` just
    before the last message goes (so a caller's next request is never taken for a cancel)."""

    def __init__(self, stream: ResponseStream, deliver: Callable[[Any], None], end: Callable[[ResponseStream], None],
                 fail: Callable[[BaseException], None]) -> None:
        self.stream, self._deliver, self._end, self._fail = stream, deliver, end, fail
        self._events: Iterator[Any] = stream.events(poll_interval=0.0)
        self.finished = threading.Event()
        self.final_sent = False
        self.caller_gone = False
        self._cancel_asked = False

    def cancel(self) -> None:
        """The caller left: the pump cancels the request at its next pass (wake it)."""
        self._cancel_asked = True

    def pump(self) -> bool:
        """Sends what is ready; False once the stream is over (``finished`` set)."""
        try:
            if self._cancel_asked:
                raise EOFError("the caller left")
            for event in self._events:
                if event is None:  # nothing more ready now
                    return True
                self._deliver(event)
            self.final_sent = True
            self._end(self.stream)
        except (OSError, EOFError):
            self.caller_gone = True
            self.stream.cancel()  # free the engine for others
        except Exception as exc:
            self._fail_quietly(exc)
        self._events.close()  # a stream left mid-way lets go of what it holds now
        self.finished.set()
        return False

    def _fail_quietly(self, exc: BaseException) -> None:
        self.final_sent = True
        try:
            self._fail(exc)
        except (OSError, EOFError):
            self.caller_gone = True


class StreamPump:
    """The pump thread of one link server (started on the first stream)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._added: list[PumpedStream] = []
        self._thread: Optional[threading.Thread] = None

    def wake(self) -> None:
        """Called by the engine's loop thread after each event it posts: cheap when already awake. A post
        that sees the flag set needs no set of its own: the pump clears it before draining, so it drains
        that event too."""
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
        while True:
            self._wake.wait(IDLE_WAKE_SECONDS)
            self._wake.clear()
            with self._lock:
                active.extend(self._added)
                self._added.clear()
            try:
                active = [pumped for pumped in active if pumped.pump()]
            except Exception:  # a bug here must not leave every stream hanging: end them all
                log.exception("%s: the stream pump failed; ending its streams", self._name)
                for pumped in active:
                    pumped.cancel()
                    pumped.pump()
                active = []
