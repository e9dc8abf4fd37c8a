"""Picks the next token of every sequence that finished its pending tokens this step."""
from __future__ import annotations

from typing import Optional, Sequence as Seq

import torch

from mii_core.sampling.filters import filter_logits
from mii_core.sampling.logprobs import TokenLogprob, step_logprobs
from mii_core.sampling.protocol import SequenceForSampling


class Sampler:
    """One rank's :class:`~mii_core.sampling.protocol.TokenSampler`."""

    def __init__(self, eos_ids: Seq[int], vocab_size: int) -> None:
        self.eos_ids = [e for e in eos_ids if 0 <= e < vocab_size]

    def __call__(self, logits: torch.Tensor, seqs: Seq[SequenceForSampling]) -> list[int]:
        logits = self._suppress_early_eos(logits, seqs)
        chosen = logits.argmax(dim=-1)
        sampled_rows = [i for i, s in enumerate(seqs) if s.options.do_sample]
        if sampled_rows:
            rows = torch.tensor(sampled_rows, device=logits.device)
            chosen[rows] = self._sample(logits.index_select(0, rows), [seqs[i] for i in sampled_rows])
        return chosen.tolist()

    def all_greedy(self, seqs: Seq[SequenceForSampling], unread: int = 0) -> bool:
        """Whether the next token of every sequence is plain argmax (greedy, and none still barred from
        EOS), so that it can stay on the device. ``unread``: tokens each sequence sampled that are not in
        ``generated_ids`` yet."""
        # a sequence asking for logprobs needs its logits read with its token: not the overlapped path
        return not any(seq.options.do_sample or seq.options.logprobs is not None or self._barred_from_eos(seq, unread)
                       for seq in seqs)

    def logprobs(self, logits: torch.Tensor, seqs: Seq[SequenceForSampling],
                 tokens: Seq[int]) -> list[Optional[TokenLogprob]]:
        return step_logprobs(logits, seqs, tokens)

    def _barred_from_eos(self, seq: SequenceForSampling, unread: int = 0) -> bool:
        """min_new_tokens: EOS cannot be chosen before that many tokens were generated (HF's rule)."""
        return (bool(self.eos_ids) and not seq.options.ignore_eos
                and len(seq.generated_ids) + unread < seq.options.min_new_tokens)

    def _suppress_early_eos(self, logits: torch.Tensor, seqs: Seq[SequenceForSampling]) -> torch.Tensor:
        early = [i for i, s in enumerate(seqs) if self._barred_from_eos(s)]
        if early:
            logits = logits.clone()
            rows = torch.tensor(early, device=logits.device)[:, None]
            logits[rows, torch.tensor(self.eos_ids, device=logits.device)[None, :]] = float("-inf")
        return logits

    def _sample(self, logits: torch.Tensor, seqs: Seq[SequenceForSampling]) -> torch.Tensor:
        vocab = logits.shape[1]
        device = logits.device
        top_k = torch.tensor([s.options.top_k or vocab for s in seqs], device=device)
        top_p = torch.tensor([s.options.top_p for s in seqs], device=device, dtype=torch.float64)
        temperature = torch.tensor([s.options.temperature or 1.0 for s in seqs], device=device)
        probs = filter_logits(logits, top_k, top_p, temperature).softmax(dim=-1)
        # Exponential race: argmax(p / E) with E ~ Exp(1) draws from p; each seeded request reads its
        # own generator, so its draws do not depend on what else shares the batch.
        noise = torch.empty_like(probs).exponential_()
        for row, seq in enumerate(seqs):
            if seq.generator is not None:
                noise[row].exponential_(generator=seq.generator)
        # a draw of exactly 0 would make 0 / 0 = NaN for a removed token, and argmax picks NaN
        noise.clamp_(min=torch.finfo(noise.dtype).tiny)
        return (probs / noise).argmax(dim=-1)
