"""The store behind conftest's `pipeline` fixture: pipelines shared within a test module, built once per
(path, options), with a bound on how many stay alive.

Each pipeline holds a KV cache of cpu_budget_bytes (512 MiB by default, zero-filled, so resident): a module
that built twenty kept 10 GB alive until its end, and two pytest-xdist workers each in such a module went
near the 24 GB of the CI machine. So at most LIVE pipelines that test bodies asked for are kept; past that
the least recently used one is destroyed, and built again if a later test asks for it (the same path and
options give the same pipeline, so no test sees a difference). Never destroyed before the module ends:
a pipeline asked for by a fixture (a fixture may hold it for the whole module), and one the running test
asked for (it may still use it).
"""
from __future__ import annotations

import gc
from collections import OrderedDict
from typing import Any, Callable, Optional
from unittest import mock

LIVE = 4

_running_test: list[Optional[str]] = [None]  # the node id of the test whose body is running, else None


def test_body_started(nodeid: str) -> None:
    _running_test[0] = nodeid


def test_body_ended() -> None:
    _running_test[0] = None


class PipelinePool:
    def __init__(self, build: Callable[..., Any], live: int = LIVE) -> None:
        self._build, self._live = build, live
        self._pipes: OrderedDict[tuple, Any] = OrderedDict()  # least recently used first
        self._asked_by: dict[tuple, Optional[str]] = {}  # the test body that last asked; None: a fixture

    def get(self, path, **model_options):
        key = (str(path), repr(sorted(model_options.items())))
        asker = _running_test[0]
        if key in self._pipes:
            self._pipes.move_to_end(key)
        else:
            self._pipes[key] = self._build(str(path), **model_options)
        # once a fixture has it, it is kept: the fixture may hand it to every later test of the module
        if self._asked_by.get(key, "") is not None:
            self._asked_by[key] = asker
        self._evict_past_limit(asker)
        return self._pipes[key]

    def close(self) -> None:
        # destroy() runs a full gc.collect() for its engine's reference cycles, about half a second in a
        # test process; one collection after every destroy() frees the same memory
        with mock.patch("gc.collect"):
            for pipe in self._pipes.values():
                pipe.destroy()
        gc.collect()
        self._pipes.clear()
        self._asked_by.clear()

    def _evict_past_limit(self, asker: Optional[str]) -> None:
        evictable = [key for key in self._pipes if self._asked_by[key] is not None]
        for key in evictable[:max(0, len(evictable) - self._live)]:
            if self._asked_by[key] != asker:
                self._pipes.pop(key).destroy()
                del self._asked_by[key]
