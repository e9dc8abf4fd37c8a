"""Which Triton kernel variants a phase of the benchmark made ready (compiled, or loaded from the disk cache).

A variant a timed workload needs for the first time costs its compile (a second or more with a cold cache)
inside the timing: the engine's warm-up is meant to leave none. Triton calls ``knobs.runtime.jit_cache_hook``
whenever a launch misses the process's in-memory kernel cache, before it compiles; this module counts those
calls by kernel name, so a phase's results can say what it compiled (W1 with an FP8 cache measured 11,670
and 13,581 tok/s on one tree in two calls of 2026-12-03: a cold cache was one suspect).
"""
from __future__ import annotations

from collections import Counter
from contextlib import contextmanager

_made: Counter = Counter()
_installed: list[bool] = []  # [True] once the hook is in, [False] where this Triton has no such knob


def install() -> bool:
    """Puts the counting hook in front of any hook already set (once a process); False where Triton has no
    ``knobs.runtime.jit_cache_hook`` (or no Triton)."""
    if _installed:
        return _installed[0]
    try:
        from triton import knobs
        previous = knobs.runtime.jit_cache_hook
    except (ImportError, AttributeError):
        _installed.append(False)
        return False

    def counting(**kwargs):
        _made[str(kwargs.get("repr", "?")).split("[")[0]] += 1
        return previous(**kwargs) if previous else None  # a true answer would skip the compile

    knobs.runtime.jit_cache_hook = counting
    _installed.append(True)
    return True


@contextmanager
def watch():
    """Yields a dict filled, when the block ends, with what it made ready: ``{"count": N, "kernels": {name:
    n}}``, or ``{"count": None}`` where the hook is unavailable."""
    seen: dict = {}
    if not install():
        seen["count"] = None
        yield seen
        return
    before = Counter(_made)
    try:
        yield seen
    finally:
        made = _made - before
        seen.update(count=sum(made.values()), kernels=dict(sorted(made.items())))
