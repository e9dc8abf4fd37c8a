"""What ``query`` returns: MII Legacy's reply, with the response as Python objects."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class LegacyResult:
    """``response``: what the task answers (MII sent ``str()`` of it; the objects themselves are more
    useful, and ``print(result.response)`` reads the same). ``time_taken``: seconds from the query's
    arrival to its answer, queueing and batching included."""

    response: Any
    time_taken: float
