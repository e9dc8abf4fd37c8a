"""What the router tells its observers (the REST plugin's Prometheus metrics): each request's outcome,
time to first token, inter-token latency and tokens generated."""
from __future__ import annotations

import logging
import time
from typing import Any, Protocol

from mii_core.serving.backend import Chunk

log = logging.getLogger("mii_core.serving.router")


class Observer(Protocol):
    def request_ended(self, outcome: str) -> None: ...
    def first_token(self, seconds: float) -> None: ...
    def inter_token(self, seconds: float) -> None: ...
    def tokens_generated(self, count: int) -> None: ...


class Observers:
    """Every observer hears every event; a failing observer is logged, never fails the request."""

    def __init__(self) -> None:
        self._observers: list[Observer] = []

    def add(self, observer: Observer) -> None:
        self._observers.append(observer)

    def notify(self, event: str, value: Any) -> None:
        for observer in self._observers:
            try:
                getattr(observer, event)(value)
            except Exception:
                log.exception("metrics observer failed on %s", event)


class TokenTimer:
    """One request's token timings, from its chunks (each carries its prompt's generated length)."""

    def __init__(self, observers: Observers) -> None:
        self.observers = observers
        self._submitted = time.monotonic()
        self._last_chunk: dict[int, float] = {}
        self._tokens: dict[int, int] = {}

    def observe(self, event: Any) -> None:
        if not isinstance(event, Chunk):
            return
        now, index = time.monotonic(), event.index
        count = event.response.generated_length
        new_tokens = count - self._tokens.get(index, 0)
        if new_tokens <= 0:
            return
        previous = self._last_chunk.get(index)
        if previous is None:
            self.observers.notify("first_token", now - self._submitted)
        else:
            self.observers.notify("inter_token", (now - previous) / new_tokens)
        self.observers.notify("tokens_generated", new_tokens)
        self._last_chunk[index], self._tokens[index] = now, count
