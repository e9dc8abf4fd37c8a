"""Checks a generation call's inputs and turns each prompt into a Sequence (all-or-nothing)."""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Any, Optional, Sequence as Seq, Union

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
        _check_encodable(i, prompt)
    return list(prompts)


def normalize_prompt_ids(prompt_ids: Any) -> list[list[int]]:
    """A list of non-empty lists of token ids (ints); the vocabulary bound is the pipeline's to check."""
    if not isinstance(prompt_ids, (list, tuple)) or not prompt_ids:
        raise TypeError("prompt_ids must be a non-empty list of token id lists")
    for i, ids in enumerate(prompt_ids):
        if not isinstance(ids, (list, tuple)) or not ids:
            raise TypeError(f"prompt_ids[{i}] must be a non-empty list of token ids")
        if not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
            raise TypeError(f"prompt_ids[{i}] must hold integers only (token ids)")
    return [list(ids) for ids in prompt_ids]


def _check_encodable(index: int, prompt: str) -> None:
    """A lone surrogate (half of a UTF-16 pair, e.g. from a bad decode) is not text a tokenizer can read."""
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"prompt {index} holds {prompt[exc.start]!r} at character {exc.start}, a lone "
                         "surrogate that is not valid Unicode text; remove it or decode the source with "
                         "errors='replace'") from None


def prompt_char_ceiling(tokenizer: Any, limit: LengthLimit) -> Optional[CharLimit]:
    """The most characters a prompt within ``limit`` can have: no token stands for more characters than
    its vocabulary entry holds (byte-level, WordPiece and SentencePiece entries alike). None for a
    tokenizer that lists no vocabulary."""
    get_vocab = getattr(tokenizer, "get_vocab", None)
    if get_vocab is None:
        return None
    longest = max((len(entry) for entry in get_vocab()), default=1)
    return CharLimit(limit.tokens * longest, f"{limit.source} ({limit.tokens} tokens)")


# Tokenizing text takes ~150 bytes of memory a character: calls with more text than this take turns, at most
# LARGE_TEXT_AT_ONCE of them at a time, so that many concurrent large prompts cannot add up.
LARGE_TEXT_CHARS, LARGE_TEXT_AT_ONCE = 64 * 1024, 2
_large_text_turns = threading.BoundedSemaphore(LARGE_TEXT_AT_ONCE)


def tokenize_prompts(tokenizer: Any, prompts: list[str], max_chars: Optional[CharLimit] = None) -> list[list[int]]:
    """Token ids per prompt; a prompt that yields none is refused here, before the engine sees it. A prompt
    of more than ``max_chars`` characters cannot fit and is refused before it is tokenized (tokenizing
    megabytes of text takes hundreds of megabytes)."""
    for i, prompt in enumerate(prompts):
        if max_chars is not None and len(prompt) > max_chars.chars:
            raise ValueError(f"prompt {i} has {len(prompt)} characters; with this tokenizer no prompt of more "
                             f"than {max_chars.chars} characters fits {max_chars.source}: shorten it")
    turn = _large_text_turns if sum(map(len, prompts)) > LARGE_TEXT_CHARS else contextlib.nullcontext()
    with turn:
        token_lists = [list(tokenizer(prompt)["input_ids"]) for prompt in prompts]
    for i, (prompt, ids) in enumerate(zip(prompts, token_lists)):
        if not ids:
            raise ValueError(f"prompt {i} ({prompt!r}) becomes no tokens at all with this tokenizer; "
                             "give it some text the tokenizer keeps")
    return token_lists


def generation_options(options: dict[str, Any]) -> GenerationConfig:
    return validate_options(GenerationConfig, options, "generation options")


@dataclass(frozen=True)
class CharLimit:
    """The most characters a prompt can have and fit, and the token limit that says so (for messages)."""

    chars: int
    source: str


@dataclass(frozen=True)
class LengthLimit:
    """A hard ceiling on prompt + generated tokens, and where it comes from (for messages)."""

    tokens: int
    source: str


def sequence_ceiling(limits: list[LengthLimit]) -> LengthLimit:
    return min(limits, key=lambda limit: limit.tokens)


def check_max_length(max_length: Optional[int], limits: list[LengthLimit], where: str = "max_length") -> None:
    """A max_length the user gave may not pass any hard ceiling (generation never runs past them)."""
    for limit in limits:
        if max_length is not None and max_length > limit.tokens:
            raise ValueError(f"{where}={max_length} exceeds {limit.source} ({limit.tokens} tokens); "
                             f"lower {where} to {limit.tokens} or less")


def new_tokens_for(prompt_len: int, options: GenerationConfig, model_max_length: Optional[int],
                   limits: list[LengthLimit]) -> int:
    """How many tokens a request may generate (MII's rule; README, "Generation options").

    max_length (this call's, else the model's, else the smallest hard ceiling) caps prompt + output;
    max_new_tokens is capped by it. The hard ceilings (max_position_embeddings, max_context, the KV
    cache) are never passed: an explicit max_length or max_new_tokens beyond one is an error.
    """
    check_max_length(options.max_length, limits)
    ceiling = sequence_ceiling(limits)
    given_max_length = options.max_length or model_max_length
    if given_max_length is not None:
        which = "max_length" if options.max_length else "the model's max_length"
        if prompt_len >= given_max_length:
            raise ValueError(f"{which} ({given_max_length}) must exceed the prompt length ({prompt_len} tokens); "
                             "raise max_length or shorten the prompt")
        room = given_max_length - prompt_len
        return room if options.max_new_tokens is None else min(options.max_new_tokens, room)
    if prompt_len >= ceiling.tokens:
        raise ValueError(f"the prompt ({prompt_len} tokens) does not fit {ceiling.source} ({ceiling.tokens} tokens); "
                         "shorten the prompt")
    if options.max_new_tokens is None:
        return ceiling.tokens - prompt_len
    if prompt_len + options.max_new_tokens > ceiling.tokens:
        raise ValueError(f"prompt ({prompt_len} tokens) + max_new_tokens={options.max_new_tokens} exceeds "
                         f"{ceiling.source} ({ceiling.tokens} tokens); lower max_new_tokens to at most "
                         f"{ceiling.tokens - prompt_len}")
    return options.max_new_tokens


def check_option_token_ids(options: GenerationConfig, vocab_size: int) -> None:
    """The token ids an option names must lie in the model's vocabulary (vLLM checks them alike)."""
    named = {"logit_bias": list(options.logit_bias or ()), "allowed_token_ids": options.allowed_token_ids or [],
             "stop_token_ids": options.stop_token_ids}
    for name, ids in named.items():
        outside = [t for t in ids if not 0 <= t < vocab_size]
        if outside:
            raise ValueError(f"{name} must name token ids in [0, {vocab_size}) (the model's vocabulary); "
                             f"{outside[0]} is not")


def truncate_prompt(prompt_ids: list[int], options: GenerationConfig, ceiling: LengthLimit) -> list[int]:
    """vLLM's truncate_prompt_tokens: the prompt's last k tokens (-1: k is the model's length limit)."""
    keep = options.truncate_prompt_tokens
    if keep is None:
        return prompt_ids
    keep = ceiling.tokens if keep == -1 else keep
    return prompt_ids[-keep:] if len(prompt_ids) > keep else prompt_ids


def build_sequence(uid: int, prompt_ids: list[int], max_new_tokens: int, options: GenerationConfig,
                   device: torch.device, bad_words_ids: Optional[list[list[int]]] = None) -> Sequence:
    generator = None
    if options.do_sample and options.seed is not None:
        generator = torch.Generator(device=device)
        generator.manual_seed(options.seed)
    return Sequence(uid=uid, prompt_ids=list(prompt_ids), max_new_tokens=max_new_tokens, options=options,
                    generator=generator, bad_words_ids=bad_words_ids or [])
