"""Qwen (v1)'s tokenizer from its ``qwen.tiktoken`` vocabulary, without the checkpoint's remote code.

The format's public facts (tokenization_qwen.py): byte-level BPE whose ranks are the lines
``base64(token bytes) rank`` of ``qwen.tiktoken``, text split by ``PATTERN`` first and NFC-normalised,
and 208 special tokens right after the ranks (151643 in the real vocabulary): ``<|endoftext|>`` (also
end of sequence), ``<|im_start|>``, ``<|im_end|>``, ``<|extra_0|>`` ... ``<|extra_204|>``. Special
tokens written in the text are encoded as such, as Qwen does, and ``skip_special_tokens`` drops them.
"""
from __future__ import annotations

import base64
import binascii
import unicodedata
from pathlib import Path
from typing import Iterable, Union

import tiktoken

VOCAB_FILE = "qwen.tiktoken"
PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"""
           r"""|\s+(?!\S)|\s+""")
ENDOFTEXT = "<|endoftext|>"
SPECIAL_TOKENS = (ENDOFTEXT, "<|im_start|>", "<|im_end|>") + tuple(f"<|extra_{i}|>" for i in range(205))


def read_ranks(vocab_file: Path) -> dict[bytes, int]:
    """The BPE ranks. Parsed here rather than by tiktoken.load, which caches local files by path."""
    ranks = {}
    for number, line in enumerate(vocab_file.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except (ValueError, binascii.Error):
            raise ValueError(f"'{vocab_file}' line {number} is not 'base64-token rank': {line[:60]!r}") from None
    if not ranks:
        raise ValueError(f"'{vocab_file}' holds no tokens")
    return ranks


class QwenTokenizer:
    """The subset of a Hugging Face tokenizer that mii-core uses, over a ``tiktoken.Encoding``."""

    def __init__(self, vocab_file: Union[str, Path]) -> None:
        ranks = read_ranks(Path(vocab_file))
        first_special = max(ranks.values()) + 1
        self.special_tokens = {token: first_special + i for i, token in enumerate(SPECIAL_TOKENS)}
        self.encoding = tiktoken.Encoding("qwen", pat_str=PATTERN, mergeable_ranks=ranks,
                                          special_tokens=self.special_tokens)
        self.eos_token, self.eos_token_id = ENDOFTEXT, self.special_tokens[ENDOFTEXT]
        self.bos_token_id = None  # Qwen adds no token in front of a prompt

    def __len__(self) -> int:
        return self.encoding.n_vocab

    def encode(self, text: str, **_options) -> list[int]:
        return self.encoding.encode(unicodedata.normalize("NFC", text), allowed_special="all")

    def __call__(self, text: Union[str, list[str]], **options) -> dict[str, list]:
        ids = self.encode(text, **options) if isinstance(text, str) else [self.encode(t, **options) for t in text]
        return {"input_ids": ids}

    def decode(self, token_ids: Iterable[int], skip_special_tokens: bool = False, **_options) -> str:
        ids = [int(t) for t in token_ids]
        # ids past the vocabulary (the embedding's padding rows) have no text
        limit = self.eos_token_id if skip_special_tokens else self.encoding.n_vocab
        return self.encoding.decode([t for t in ids if 0 <= t < limit], errors="replace")

    def batch_decode(self, sequences: Iterable[Iterable[int]], **options) -> list[str]:
        return [self.decode(ids, **options) for ids in sequences]
