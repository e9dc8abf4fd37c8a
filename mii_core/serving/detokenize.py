"""Text of a growing output, piece by piece, whose pieces add up to the unstreamed text.

The unstreamed text is ``tokenizer.decode(ids, skip_special_tokens=True)`` cut at a stop string
(:class:`mii_core.sampling.stopping.StopChecker`). Streamed pieces must concatenate to exactly that, so:
- a character split over several tokens (UTF-8 bytes of byte-level BPE) is held until it is whole:
  ``tokenizers``' own streaming decoder (:class:`tokenizers.decoders.DecodeStream`) does this;
- text that could be the beginning of a stop string is held until the next token decides it.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence as Seq

log = logging.getLogger(__name__)
REPLACEMENT_CHAR = "\ufffd"


class IncrementalDecoder:
    """``push(ids)`` returns the new text those ids complete (may be empty)."""

    def __init__(self, tokenizer: Any, skip_special_tokens: bool = True) -> None:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        # A tokenizer that rewrites spaces after decoding ("clean up tokenization spaces") changes text
        # already streamed, which DecodeStream cannot know; decoding the whole output keeps it exact.
        self._cleans_spaces = cleans_up_spaces(tokenizer)
        if backend is not None and not self._cleans_spaces:
            from tokenizers.decoders import DecodeStream

            self._stream, self._backend = DecodeStream(skip_special_tokens=skip_special_tokens), backend
        else:
            self._stream = None
        self._tokenizer, self._skip_special = tokenizer, skip_special_tokens
        self._ids: list[int] = []
        self._text = ""

    def push(self, ids: Seq[int]) -> str:
        if self._stream is not None:
            return "".join(self._stream.step(self._backend, int(i)) or "" for i in ids)
        return self._push_by_full_decode(ids)

    def _push_by_full_decode(self, ids: Seq[int]) -> str:
        self._ids.extend(ids)
        text = self._tokenizer.decode(self._ids, skip_special_tokens=self._skip_special)
        if text.endswith(REPLACEMENT_CHAR):
            return ""  # an unfinished character: wait for its other bytes
        if self._cleans_spaces:  # the clean-up deletes a space before the next token ("a ." → "a."),
            text = text[:max(text.rfind(" "), 0)]  # so text from the last space on waits for that token
        if len(text) <= len(self._text) or not text.startswith(self._text):
            return ""
        new, self._text = text[len(self._text):], text
        return new


def cleans_up_spaces(tokenizer: Any) -> bool:
    """Whether ``decode`` rewrites spaces after decoding (transformers skips it for BPE unless forced)."""
    if not getattr(tokenizer, "clean_up_tokenization_spaces", False):
        return False
    backend = getattr(tokenizer, "backend_tokenizer", None)
    is_bpe = backend is not None and type(backend.model).__name__ == "BPE"
    forced = "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output"
    return not is_bpe or bool(getattr(tokenizer, forced, False))


def stop_prefix_length(text: str, stops: Seq[str]) -> int:
    """Length of the longest end of ``text`` that begins some stop string (text to hold back)."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


class TextStream:
    """One sequence's streamed text: decoded pieces minus what a stop string might still claim."""

    def __init__(self, tokenizer: Any, stops: Seq[str], hold_all: bool = False, hold_last_token: bool = False,
                 skip_special_tokens: bool = True) -> None:
        self._decoder = IncrementalDecoder(tokenizer, skip_special_tokens)
        self._stops = list(stops)
        self._hold_all = hold_all  # emit nothing before the end (see EngineService: min_new_tokens + stop)
        # the newest token may be a stop token whose text the final text leaves out: decoded only once
        # the next token shows it was not the last
        self._hold_last_token = hold_last_token
        self._held: list[int] = []
        self.emitted = ""
        self._pending = ""

    def push(self, ids: Seq[int]) -> str:
        if self._hold_last_token:
            ids = self._held + list(ids)
            ids, self._held = ids[:-1], ids[-1:]
        self._pending += self._decoder.push(ids)
        if self._hold_all:
            return ""
        text = self.emitted + self._pending
        ready = self._pending[:self._sendable_length(text) - len(self.emitted)]
        self._pending = self._pending[len(ready):]
        self.emitted += ready
        return ready

    def _sendable_length(self, text: str) -> int:
        """Text before any stop string, and before an end that may grow into one."""
        if not self._stops:
            return len(text)
        start = max(len(self.emitted) - max(len(s) for s in self._stops) + 1, 0)
        hits = [i for i in (text.find(stop, start) for stop in self._stops) if i >= 0]
        if hits:  # the sequence ends here; its final text is cut at the stop string
            return min(hits)
        return len(text) - stop_prefix_length(text, self._stops)

    def finish(self, final_text: str) -> str:
        """The rest of ``final_text`` (the unstreamed text) after what was already emitted."""
        if not final_text.startswith(self.emitted):
            # Only the full-decode fallback gets here: a tokenizer whose clean-up rewrote text that was
            # already sent. What was sent cannot be taken back; say so rather than fail the request.
            log.warning("streamed text differs from the final text: the tokenizer rewrote earlier text")
            return ""
        rest = final_text[len(self.emitted):]
        self.emitted = final_text
        return rest
