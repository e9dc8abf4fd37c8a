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

    def __getattr__(self, name: str) -> Any:
        """The response's own attributes read through the result, as MII's replies have them (an image
        task's ``result.images``)."""
        if name.startswith("__"):  # copy/pickle probe dunders: keep Python's own answers
            raise AttributeError(name)
        try:
            return getattr(self.response, name)
        except AttributeError:
            raise AttributeError(f"this result has no '{name}' (its response is of type "
                                 f"{type(self.response).__name__})") from None
