"""Per-request generation options (MII's names and defaults; MII's weak spots fixed, see docs)."""
from __future__ import annotations

from typing import Optional, Union

from pydantic import Field, field_validator

from mii_core.config.base import StrictModel


class GenerationConfig(StrictModel):
    max_length: Optional[int] = Field(default=None, gt=0, description="prompt + output tokens")
    max_new_tokens: Optional[int] = Field(default=None, gt=0)
    min_new_tokens: int = Field(default=0, ge=0, description="counted on generated tokens (MII: whole length)")
    stream: bool = False
    ignore_eos: bool = False
    return_full_text: bool = False
    do_sample: bool = True
    top_p: float = Field(default=0.9, gt=0, le=1)
    top_k: Optional[int] = Field(default=None, gt=0)
    temperature: Optional[float] = Field(default=None, gt=0)
    stop: list[str] = Field(default_factory=list)
    seed: Optional[int] = None

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_list(cls, value: Union[str, list[str], None]) -> list[str]:
        if value is None:
            return []
        stops = [value] if isinstance(value, str) else list(value)
        if any(not isinstance(s, str) or s == "" for s in stops):
            raise ValueError("stop must be a non-empty string or a list of non-empty strings")
        return stops
