"""Deciding when a sequence is done: EOS, stop_token_ids, length limits and stop strings matched on decoded
text; and the sequence's final text (a stop string, or the text of the stop token, cut off unless
include_stop_str_in_output, as vLLM does)."""
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
        last = seq.generated_ids[-1]
        if generated >= options.min_new_tokens and ((not options.ignore_eos and last in self.eos_ids)
                                                     or last in options.stop_token_ids):
            self._cut_stop_token(seq)
            return "stop"
        if options.stop and generated >= options.min_new_tokens and self._find_stop(seq):
            return "stop"
        if generated >= seq.max_new_tokens:
            return "length"
        return None

    def _cut_stop_token(self, seq: SequenceForSampling) -> None:
        """vLLM leaves the stop token's text out unless include_stop_str_in_output (EOS's text is empty
        when special tokens are skipped: no decode needed then)."""
        options = seq.options
        if options.include_stop_str_in_output or (options.skip_special_tokens and not options.stop_token_ids):
            return
        seq.stop_cut = len(self.decode(seq.generated_ids[:-1], options.skip_special_tokens))

    def _find_stop(self, seq: SequenceForSampling) -> bool:
        """Stop strings may span several tokens, so they are matched on the decoded text.

        With min_new_tokens, a match counts only when it ends after the text of the first
        min_new_tokens tokens, and the cut never shortens that text.
        """
        skip = seq.options.skip_special_tokens
        text = self.decode(seq.generated_ids, skip)
        minimum = seq.options.min_new_tokens
        floor = len(self.decode(seq.generated_ids[:minimum], skip)) if minimum else 0
        keep_stop = seq.options.include_stop_str_in_output
        # a new match must end past the text searched in earlier steps, and past the floor
        after = max(seq.text_checked, floor)
        seq.text_checked = len(text)
        cuts = []
        for stop in seq.options.stop:
            at = text.find(stop, max(after - len(stop) + 1, 0))
            if at >= 0:
                cuts.append(max(at + len(stop) if keep_stop else at, floor))
        if cuts:
            seq.stop_cut = min(cuts)
        return bool(cuts)

    def decode(self, token_ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=skip_special_tokens)

    def final_text(self, seq: SequenceForSampling) -> str:
        text = self.decode(seq.generated_ids, seq.options.skip_special_tokens)
        return text if seq.stop_cut is None else text[:seq.stop_cut]
