"""What a generation call returns (MII's ``Response``)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Response:
    generated_text: str
    prompt_length: int
    generated_length: int
    finish_reason: str  # "stop" (EOS or a stop string), "length", or "none" for a stream chunk

    def __str__(self) -> str:
        return self.generated_text


@dataclass
class TokenOutput:
    """Token-level result of :meth:`Pipeline.generate_tokens` (benchmarks, servers)."""

    token_ids: list[int]
    finish_reason: str
