"""What a generation call returns (MII's ``Response``)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(repr=False)  # eq stays: two Responses with equal fields are equal
class Response:
    generated_text: str
    prompt_length: int
    generated_length: int
    finish_reason: str  # "stop" (EOS or a stop string), "length", or "none" for a stream chunk

    def __str__(self) -> str:
        return self.generated_text

    def __repr__(self) -> str:
        """The text, as in MII, so that ``print(responses)`` shows the generated texts."""
        return self.generated_text


@dataclass
class TokenOutput:
    """Token-level result of :meth:`Pipeline.generate_tokens` (benchmarks, servers)."""

    token_ids: list[int]
    finish_reason: str
