"""Per-request generation options (MII's names and defaults; MII's weak spots fixed, see docs)."""
from __future__ import annotations

from typing import Any, Optional

from pydantic import Field, field_validator, model_validator

from mii_core.config.base import StrictModel

SEED_LIMIT = 2**64  # torch generators take 64-bit seeds
# Token counts and top_k end up in the engine's int32/int64 tensors; past this they overflow there (a
# failing step), and no model's length or vocabulary comes near it.
COUNT_LIMIT = 2**31 - 1
# Logits are divided by the temperature in float32: past this it becomes inf there and the division NaN
# (every token id 0, silently); 1e30 is already uniform over what top-k/top-p keep. (A tiny temperature is
# handled by the sampler: exactly greedy.)
TEMPERATURE_MAX = 1e30
# Stop strings are searched for in every sequence's new text after each step, on the engine's loop: bounded
# so that one request cannot slow every other's steps (vLLM bounds them only by the body size).
STOP_COUNT_LIMIT, STOP_LENGTH_LIMIT = 64, 1024


class GenerationConfig(StrictModel):
    max_length: Optional[int] = Field(default=None, gt=0, le=COUNT_LIMIT, description="prompt + output tokens")
    max_new_tokens: Optional[int] = Field(default=None, gt=0, le=COUNT_LIMIT)
    min_new_tokens: int = Field(default=0, ge=0, le=COUNT_LIMIT,
                                description="counted on generated tokens (MII: whole length)")
    stream: bool = False
    ignore_eos: bool = False
    return_full_text: bool = False
    do_sample: bool = True
    top_p: float = Field(default=0.9, gt=0, le=1, allow_inf_nan=False)
    top_k: Optional[int] = Field(default=None, gt=0, le=COUNT_LIMIT)
    temperature: Optional[float] = Field(default=None, gt=0, le=TEMPERATURE_MAX, allow_inf_nan=False)
    stop: list[str] = Field(default_factory=list)
    # Not negative: elsewhere -1 often means "random", which a fixed torch seed would silently not be.
    seed: Optional[int] = Field(default=None, ge=0, lt=SEED_LIMIT)
    # log-probabilities of each generated token and of this many alternatives (vLLM's logprobs; 0: the
    # chosen token's own), of the raw logits; 20 is vLLM's max_logprobs
    logprobs: Optional[int] = Field(default=None, ge=0, le=20)
    # log-probabilities of each prompt token after the first and of this many alternatives (vLLM's
    # prompt_logprobs), of the raw logits; such a request skips the prefix cache (see the scheduler)
    prompt_logprobs: Optional[int] = Field(default=None, ge=0, le=20)

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_list(cls, value: Any) -> list[str]:
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or any(not isinstance(s, str) or s == "" for s in value):
            raise ValueError(f"stop must be a non-empty string or a list of non-empty strings, got {value!r}"[:500])
        if len(value) > STOP_COUNT_LIMIT or any(len(s) > STOP_LENGTH_LIMIT for s in value):
            raise ValueError(f"stop takes at most {STOP_COUNT_LIMIT} strings of at most {STOP_LENGTH_LIMIT} "
                             f"characters each, got {len(value)} of up to {max(map(len, value))}")
        return list(value)

    @model_validator(mode="after")
    def _check_consistent(self) -> "GenerationConfig":
        if self.max_new_tokens is not None and self.min_new_tokens > self.max_new_tokens:
            raise ValueError(f"min_new_tokens={self.min_new_tokens} exceeds max_new_tokens={self.max_new_tokens}; "
                             "lower min_new_tokens or raise max_new_tokens")
        return self
