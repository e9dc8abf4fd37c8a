"""Structured output through xgrammar (docs/structured-output.md says why this library): a request's
``guided_*`` option compiled once per request into a grammar, and a matcher per sequence that follows the
tokens it accepted and gives the next step's token bitmask (only tokens that keep the output in the
grammar; EOS only where the grammar may end).

xgrammar is imported on first use, so a deployment that never asks for structured output never loads it.
"""
from __future__ import annotations

import re
import threading
from typing import Any, Optional, Sequence as Seq

from mii_core.config.generation import GenerationConfig


class GrammarState:
    """One sequence's matcher, brought up to date with the tokens the sequence holds before each mask.

    Catching up from ``generated_ids`` (rather than being told each token) keeps the matcher right whatever
    the loop did meanwhile: a row sampled again after a failed batch, or a step that fed tokens ahead."""

    def __init__(self, matcher: Any, name: str) -> None:
        self.matcher, self.name, self.accepted = matcher, name, 0

    def catch_up(self, generated_ids: Seq[int]) -> None:
        for token in generated_ids[self.accepted:]:
            if not self.matcher.accept_token(token):  # the mask allowed it: only a broken invariant gets here
                raise RuntimeError(f"token {token} breaks the {self.name} grammar it was sampled under")
            self.accepted += 1

    def fill(self, bitmask: Any, row: int) -> None:
        """Row ``row`` of ``bitmask`` (xgrammar's int32 [rows, ceil(vocab / 32)]): the allowed next tokens."""
        self.matcher.fill_next_token_bitmask(bitmask, row)


class GrammarCompiler:
    """Compiles requests' guided options for one tokenizer (thread-safe: requests arrive on many threads)."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_ids: Seq[int]) -> None:
        import xgrammar

        self._xgr = xgrammar
        info = _tokenizer_info(xgrammar, tokenizer, vocab_size, list(stop_ids))
        self._compiler = xgrammar.GrammarCompiler(info, max_threads=2)  # its cache keeps repeated schemas
        self._lock = threading.Lock()

    def state_for(self, options: GenerationConfig) -> Optional[GrammarState]:
        """A new matcher for one sequence of a request with these options, or None without a guide.
        A schema, regex or grammar the library refuses is a ValueError naming the option."""
        guide = options.guide
        if guide is None:
            return None
        name, value = guide
        with self._lock:
            compiled = self._compile(name, value)
        return GrammarState(self._xgr.GrammarMatcher(compiled), name)

    def _compile(self, name: str, value: Any) -> Any:
        compiler = self._compiler
        try:
            if name == "guided_json":
                # compact JSON (vLLM's disable_any_whitespace): no token is spent on runs of whitespace
                return compiler.compile_json_schema(value, any_whitespace=False)
            if name == "guided_json_object":  # OpenAI's json_object: any JSON object, any properties
                return compiler.compile_json_schema('{"type": "object"}', any_whitespace=False, strict_mode=False)
            if name == "guided_regex":
                return compiler.compile_regex(value)
            if name == "guided_choice":
                return compiler.compile_regex("|".join(_regex_literal(choice) for choice in value))
            return compiler.compile_grammar(value)  # guided_grammar: EBNF (GBNF), as vLLM's xgrammar backend
        except Exception as exc:  # xgrammar raises RuntimeError / its own errors with the reason
            raise ValueError(f"{name} could not be compiled: {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    """The library's message without the C++ log prefix ("[00:34:14] /project/cpp/x.cc:94: ")."""
    return re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", str(exc).strip())[:500]


def _regex_literal(text: str) -> str:
    """``text`` as a regex that matches exactly it (xgrammar's regex syntax is ECMAScript's)."""
    return "(" + "".join("\\" + c if c in r"\^$.|?*+()[]{}/" else c for c in text) + ")"


def _tokenizer_info(xgr: Any, tokenizer: Any, vocab_size: int, stop_ids: list[int]) -> Any:
    """xgrammar's view of the vocabulary. Its reader knows byte-level BPE and SentencePiece tokenizers; one
    with a Metaspace decoder (a "▁" for a space, no byte fallback) it would read as raw text with literal
    "▁"s, so that one is given as SentencePiece-style pieces, special tokens blanked."""
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=stop_ids)
    if info.vocab_type != xgr.VocabType.RAW or not _metaspace_decoder(tokenizer):
        return info
    special = set(tokenizer.all_special_ids)
    pieces = ["" if i in special else piece
              for i, piece in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))))]
    return xgr.TokenizerInfo(pieces, xgr.VocabType.BYTE_FALLBACK, vocab_size=vocab_size, stop_token_ids=stop_ids)


def _metaspace_decoder(tokenizer: Any) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend is not None and type(backend.decoder).__name__ == "Metaspace"


class LazyGrammarCompiler:
    """A :class:`GrammarCompiler` made on the first request that asks for structured output."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_ids: Seq[int]) -> None:
        self._args = (tokenizer, vocab_size, [s for s in stop_ids if 0 <= s < vocab_size])
        self._compiler: Optional[GrammarCompiler] = None
        self._lock = threading.Lock()

    def state_for(self, options: GenerationConfig) -> Optional[GrammarState]:
        if options.guide is None:
            return None
        with self._lock:
            if self._compiler is None:
                self._compiler = GrammarCompiler(*self._args)
        return self._compiler.state_for(options)
