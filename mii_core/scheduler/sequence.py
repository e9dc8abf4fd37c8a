"""A request's life in the engine: its tokens, its options, and its KV record while it holds blocks."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Optional

import torch

from mii_core.config.generation import GenerationConfig

if TYPE_CHECKING:
    from mii_core.kv_cache.manager import SequenceKV


class SequenceStatus(Enum):
    WAITING = "waiting"     # not in the KV cache (new, or preempted and to be recomputed)
    RUNNING = "running"     # holds KV blocks
    FINISHED = "finished"


@dataclass(slots=True, eq=False)
class Sequence:
    uid: int
    prompt_ids: list[int]
    max_new_tokens: int
    options: GenerationConfig
    generated_ids: list[int] = field(default_factory=list)
    # its record in the scheduler's KV manager while it holds blocks (set and cleared by the scheduler only)
    kv: Optional["SequenceKV"] = None
    status: SequenceStatus = SequenceStatus.WAITING
    finish_reason: Optional[str] = None
    error: Optional[Exception] = None  # why it failed alone (finish_reason "error"), its batch going on
    generator: Optional[torch.Generator] = None  # per-request RNG when a seed is given
    text_checked: int = 0  # characters of generated text already searched for stop strings
    stop_cut: Optional[int] = None  # character index where a stop string begins in the generated text
    # per generated token, its log-probabilities (mii_core.sampling.logprobs.TokenLogprob) when the
    # options ask for them, else empty
    logprobs: list = field(default_factory=list)
    # options.bad_words as the token sequences to ban (mii_core.sampling.bad_words), resolved on admission
    bad_words_ids: list[list[int]] = field(default_factory=list)
    # per prompt token after the first, its TokenLogprob when the options ask for prompt_logprobs (filled
    # chunk by chunk as the prompt is computed), else empty
    prompt_logprobs: list = field(default_factory=list)
    # its structured-output matcher (mii_core.sampling.grammar.GrammarState) when options give a guide
    grammar: Optional[Any] = None
    # once its whole cache was recomputed because the model asked (its restart_length), the prompt length the
    # recomputation was keyed by: all its tokens then; None: its prompt's length
    restarted_prompt_length: Optional[int] = None
    arrival: int = 0  # its place in the order requests reached the scheduler (set by Scheduler.add)

    @property
    def precedence(self) -> tuple[int, int]:
        """Under the priority policy it goes before any sequence with a larger key: priority, then arrival."""
        return self.options.priority, self.arrival

    @property
    def cache_prompt_length(self) -> int:
        """The prompt length its cache is keyed by (``RaggedBatch.prompt_lens``) when it is admitted."""
        return self.restarted_prompt_length or len(self.prompt_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.generated_ids)

    @property
    def num_computed(self) -> int:
        """Tokens already in the KV cache: the KV record's count, the only one kept."""
        return self.kv.cached if self.kv is not None else 0

    def token_slice(self, start: int, count: int) -> list[int]:
        """Tokens ``start .. start + count`` of prompt + output, without building the whole list."""
        prompt_len = len(self.prompt_ids)
        if start + count <= prompt_len:
            return self.prompt_ids[start:start + count]
        if start >= prompt_len:
            return self.generated_ids[start - prompt_len:start - prompt_len + count]
        return self.prompt_ids[start:] + self.generated_ids[:start + count - prompt_len]

    @property
    def scores_prompt(self) -> bool:
        """It asked for prompt_logprobs and some prompt token has none yet: its prompt chunks need the
        logits of every position, and it may not start on cached blocks it would then not score."""
        return (self.options.prompt_logprobs is not None
                and len(self.prompt_logprobs) < len(self.prompt_ids) - 1)

    @property
    def num_pending(self) -> int:
        """Tokens not yet in the KV cache: the prompt (or all, after a preemption) or the last sample."""
        return self.num_tokens - self.num_computed
