"""Deciding when a sequence is done: EOS, length limits and stop strings matched on decoded text."""
from __future__ import annotations

from typing import Any, Optional, Sequence as Seq

from mii_core.sampling.protocol import SequenceForSampling


class StopChecker:
    def __init__(self, tokenizer: Any, eos_ids: Seq[int]) -> None:
        self.tokenizer = tokenizer
        self.eos_ids = set(eos_ids)

    def check(self, seq: SequenceForSampling) -> Optional[str]:
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

    def _find_stop(self, seq: SequenceForSampling) -> bool:
        """Stop strings may span several tokens, so they are matched on the decoded text.

        With min_new_tokens, a match counts only when it ends after the text of the first
        min_new_tokens tokens, and the cut never shortens that text.
        """
        text = self.decode(seq.generated_ids)
        minimum = seq.options.min_new_tokens
        floor = len(self.decode(seq.generated_ids[:minimum])) if minimum else 0
        # a new match must end past the text searched in earlier steps, and past the floor
        after = max(seq.text_checked, floor)
        seq.text_checked = len(text)
        cuts = []
        for stop in seq.options.stop:
            at = text.find(stop, max(after - len(stop) + 1, 0))
            if at >= 0:
                cuts.append(max(at, floor))
        if cuts:
            seq.stop_cut = min(cuts)
        return bool(cuts)

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    def final_text(self, seq: SequenceForSampling) -> str:
        text = self.decode(seq.generated_ids)
        return text if seq.stop_cut is None else text[:seq.stop_cut]
