"""Checks a generation call's inputs and turns each prompt into a Sequence (all-or-nothing)."""
from __future__ import annotations

from typing import Any, Sequence as Seq, Union

import torch

from mii_core.config import GenerationConfig, validate_options
from mii_core.scheduler.sequence import Sequence


def normalize_prompts(prompts: Union[str, Seq[str]]) -> list[str]:
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, (list, tuple)):
        raise TypeError(f"prompts must be a string or a list of strings, got {type(prompts).__name__}")
    if not prompts:
        raise ValueError("prompts is empty; pass at least one prompt")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise TypeError(f"prompt {i} is a {type(prompt).__name__}; prompts must be strings")
        if prompt == "":
            raise ValueError(f"prompt {i} is an empty string; give it some text")
    return list(prompts)


def generation_options(options: dict[str, Any]) -> GenerationConfig:
    return validate_options(GenerationConfig, options, "generation options")


def new_tokens_for(prompt_len: int, options: GenerationConfig, default_max_length: int, max_context: int) -> int:
    """How many tokens a request may generate, from max_new_tokens / max_length / the engine's limits.

    ``max_context`` is the most tokens one sequence can hold: the engine's max_context or the whole KV
    cache, whichever is smaller. Left unset, max_new_tokens stops there; asked for, beyond it is an error.
    """
    max_length = options.max_length or default_max_length
    if prompt_len >= max_length:
        raise ValueError(f"max_length ({max_length}) must exceed the prompt length ({prompt_len} tokens); "
                         "raise max_length or shorten the prompt")
    limit = max_length - prompt_len
    if options.max_new_tokens is None:
        if prompt_len >= max_context:
            raise ValueError(f"the prompt ({prompt_len} tokens) fills the engine's sequence limit ({max_context} "
                             "tokens: max_context or the KV cache size); shorten it or give the KV cache more memory")
        return min(limit, max_context - prompt_len)
    new_tokens = min(options.max_new_tokens, limit) if options.max_length else options.max_new_tokens
    if prompt_len + new_tokens > max_context:
        raise ValueError(f"prompt ({prompt_len} tokens) + max_new_tokens ({new_tokens}) exceeds the engine's "
                         f"sequence limit ({max_context} tokens: max_context or the KV cache size, whichever is "
                         "smaller); lower max_new_tokens, or raise max_context / the KV cache memory")
    return new_tokens


def build_sequence(uid: int, prompt_ids: list[int], max_new_tokens: int, options: GenerationConfig,
                   device: torch.device) -> Sequence:
    generator = None
    if options.do_sample and options.seed is not None:
        generator = torch.Generator(device=device)
        generator.manual_seed(options.seed)
    return Sequence(uid=uid, prompt_ids=list(prompt_ids), max_new_tokens=max_new_tokens, options=options,
                    generator=generator)
