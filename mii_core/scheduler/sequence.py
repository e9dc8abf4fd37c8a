"""A request's life in the engine: tokens, how many are in the KV cache, and its options."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

import torch


class SequenceStatus(Enum):
    WAITING = "waiting"     # not in the KV cache (new, or preempted and to be recomputed)
    RUNNING = "running"     # holds KV blocks
    FINISHED = "finished"


@dataclass(slots=True, eq=False)
class Sequence:
    uid: int
    prompt_ids: list[int]
    max_new_tokens: int
    options: Any  # GenerationConfig
    generated_ids: list[int] = field(default_factory=list)
    num_computed: int = 0  # tokens already in the KV cache
    status: SequenceStatus = SequenceStatus.WAITING
    finish_reason: Optional[str] = None
    generator: Optional[torch.Generator] = None  # per-request RNG when a seed is given
    text_checked: int = 0  # characters of generated text already searched for stop strings
    stop_cut: Optional[int] = None  # character index where a stop string begins in the generated text

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.generated_ids)

    def token_slice(self, start: int, count: int) -> list[int]:
        """Tokens ``start .. start + count`` of prompt + output, without building the whole list."""
        prompt_len = len(self.prompt_ids)
        if start + count <= prompt_len:
            return self.prompt_ids[start:start + count]
        if start >= prompt_len:
            return self.generated_ids[start - prompt_len:start - prompt_len + count]
        return self.prompt_ids[start:] + self.generated_ids[:start + count - prompt_len]

    @property
    def num_pending(self) -> int:
        """Tokens not yet in the KV cache: the prompt (or all, after a preemption) or the last sample."""
        return self.num_tokens - self.num_computed

    def preempt(self) -> None:
        """Drops the cached state; everything so far is recomputed as one long prompt later."""
        self.num_computed = 0
        self.status = SequenceStatus.WAITING
