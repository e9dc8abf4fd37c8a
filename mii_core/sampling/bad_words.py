"""vLLM's ``bad_words`` as token sequences: each word tokenized alone and with a leading space, so that it
is banned at the start of the text and after a space alike (SamplingParams.update_from_tokenizer)."""
from __future__ import annotations

from typing import Any, Sequence as Seq


def bad_words_token_ids(tokenizer: Any, words: Seq[str]) -> list[list[int]]:
    """The token sequences to ban for ``words``: per word, its tokens without a prefix space, and with one
    where that gives the same number of tokens and a different first token (a new word token)."""
    sequences: list[list[int]] = []
    for word in words:
        plain = _encode(tokenizer, word.lstrip())
        if plain:
            sequences.append(plain)
        spaced = _encode(tokenizer, " " + word.lstrip())
        if spaced and plain and spaced[0] != plain[0] and len(spaced) == len(plain):
            sequences.append(spaced)
    return sequences


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))
