"""What a generation call returns (MII's ``Response``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional


@dataclass(repr=False)  # eq stays: two Responses with equal fields are equal
class Response:
    generated_text: str
    prompt_length: int
    generated_length: int
    finish_reason: str  # "stop" (EOS or a stop string), "length", or "none" for a stream chunk
    # Where the options asked for ``logprobs``: per generated token {"token", "token_id", "logprob",
    # "top": [{"token", "token_id", "logprob"}, ...]} (the raw logits' log-softmax; "token" is the id
    # decoded alone), else None. A streamed piece carries those of the tokens it adds; a final response
    # all of them, with the generated ``token_ids``.
    logprobs: Optional[list[dict[str, Any]]] = None
    token_ids: Optional[list[int]] = None
    # Where the options asked for ``prompt_logprobs``: per prompt token the same dict (the first token's
    # None: nothing precedes it), on the final response and a stream's first piece; else None. A final
    # response also carries the prompt's token ids.
    prompt_logprobs: Optional[list[Optional[dict[str, Any]]]] = None
    prompt_token_ids: Optional[list[int]] = None

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
    # per generated token a mii_core.sampling.logprobs.TokenLogprob where ``logprobs`` was asked, else None
    logprobs: Optional[list[Any]] = None
