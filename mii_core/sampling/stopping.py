"""Deciding when a sequence is done: EOS, length limits and stop strings matched on decoded text."""
from __future__ import annotations

from typing import Any, Optional, Sequence as Seq

from mii_core.scheduler.sequence import Sequence


class StopChecker:
    def __init__(self, tokenizer: Any, eos_ids: Seq[int]) -> None:
        self.tokenizer = tokenizer
        self.eos_ids = set(eos_ids)

    def check(self, seq: Sequence) -> Optional[str]:
        """Returns "stop", "length" or None after ``seq`` got a new token."""
        generated = len(seq.generated_ids)
        options = seq.options
        if (not options.ignore_eos and seq.generated_ids[-1] in self.eos_ids
                and generated >= options.min_new_tokens):
            return "stop"
        if options.stop and generated >= options.min_new_tokens and self._find_stop(seq):
            return "stop"
        if generated >= seq.max_new_tokens:
            return "length"
        return None

    def _find_stop(self, seq: Sequence) -> bool:
        """Stop strings may span several tokens, so they are matched on the decoded text."""
        text = self.decode(seq.generated_ids)
        longest = max(len(s) for s in seq.options.stop)
        start = max(seq.text_checked - longest, 0)  # only text that could hold a new match
        seq.text_checked = len(text)
        hits = [i for i in (text.find(s, start) for s in seq.options.stop) if i >= 0]
        if hits:
            seq.stop_cut = min(hits)
        return bool(hits)

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    def final_text(self, seq: Sequence) -> str:
        text = self.decode(seq.generated_ids)
        return text if seq.stop_cut is None else text[:seq.stop_cut]
