"""Picks the next token of every sequence that finished its pending tokens this step."""
from __future__ import annotations

from typing import Optional, Sequence as Seq

import torch

from mii_core.sampling.filters import filter_logits
from mii_core.sampling.logprobs import TokenLogprob, step_logprobs
from mii_core.sampling.processors import LogitsProcessors
from mii_core.sampling.protocol import SequenceForSampling


class Sampler:
    """One rank's :class:`~mii_core.sampling.protocol.TokenSampler`."""

    def __init__(self, eos_ids: Seq[int], vocab_size: int) -> None:
        self.eos_ids = [e for e in eos_ids if 0 <= e < vocab_size]
        self.processors = LogitsProcessors(self.eos_ids)

    def __call__(self, logits: torch.Tensor, seqs: Seq[SequenceForSampling]) -> list[int]:
        logits = self.processors(logits, seqs)  # a copy where a row uses one: logprobs stay raw
        chosen = logits.argmax(dim=-1)
        sampled_rows = [i for i, s in enumerate(seqs) if s.options.do_sample]
        if sampled_rows:
            rows = torch.tensor(sampled_rows, device=logits.device)
            chosen[rows] = self._sample(logits.index_select(0, rows), [seqs[i] for i in sampled_rows])
        return chosen.tolist()

    def all_greedy(self, seqs: Seq[SequenceForSampling], unread: int = 0) -> bool:
        """Whether the next token of every sequence is plain argmax (greedy, and no logits processor that
        can change the argmax: penalties, biases, banned or allowed tokens, a stop token still barred by
        min_tokens, a grammar mask), so that it can stay on the device. ``unread``: tokens each sequence
        sampled that are not in ``generated_ids`` yet."""
        # a sequence asking for logprobs needs its logits read with its token: not the overlapped path
        return not any(seq.options.do_sample or seq.options.logprobs is not None
                       or self.processors.changes_argmax(seq, unread) for seq in seqs)

    def logprobs(self, logits: torch.Tensor, seqs: Seq[SequenceForSampling],
                 tokens: Seq[int]) -> list[Optional[TokenLogprob]]:
        return step_logprobs(logits, seqs, tokens)

    def _sample(self, logits: torch.Tensor, seqs: Seq[SequenceForSampling]) -> torch.Tensor:
        vocab = logits.shape[1]
        device = logits.device
        # a top_k above the vocabulary keeps every token: capped here, before it becomes a tensor
        top_k = torch.tensor([min(s.options.top_k_limit or vocab, vocab) for s in seqs], device=device)
        top_p = torch.tensor([s.options.top_p for s in seqs], device=device, dtype=torch.float64)
        temperature = torch.tensor([s.options.temperature or 1.0 for s in seqs], device=device)
        min_p = None
        if any(s.options.min_p > 0 for s in seqs):
            min_p = torch.tensor([s.options.min_p for s in seqs], device=device)
        probs = filter_logits(logits, top_k, top_p, temperature, min_p).softmax(dim=-1)
        # Exponential race: argmax(p / E) with E ~ Exp(1) draws from p; each seeded request reads its
        # own generator, so its draws do not depend on what else shares the batch.
        noise = torch.empty_like(probs).exponential_()
        for row, seq in enumerate(seqs):
            if seq.generator is not None:
                noise[row].exponential_(generator=seq.generator)
        # a draw of exactly 0 would make 0 / 0 = NaN for a removed token, and argmax picks NaN
        noise.clamp_(min=torch.finfo(noise.dtype).tiny)
        return (probs / noise).argmax(dim=-1)
