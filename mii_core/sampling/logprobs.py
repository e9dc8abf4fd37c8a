"""Log-probabilities of the tokens a step chose, and their top alternatives (vLLM's ``logprobs``).

As vLLM v1 by default, they are of the model's raw logits: ``log_softmax`` in float32 of the step's
logits before temperature, top-k/top-p or the early-EOS mask change them. One vectorised pass over the
rows that asked (one gather, one ``topk`` at the largest k asked), read to the host in two copies per
step, never one per row; a step where no sequence asked costs one scan of the options and nothing more.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

MAX_LOGPROBS = 20  # vLLM's default max_logprobs


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One generated token: its log-probability and the ``k`` most likely tokens with theirs (best first)."""

    token_id: int
    logprob: float
    top_ids: tuple[int, ...]
    top_logprobs: tuple[float, ...]


# seqs: SequenceForSampling (protocol.py, which names TokenLogprob from here: Any keeps the import one-way)
def rows_wanting_logprobs(seqs: Sequence[Any]) -> list[int]:
    return [i for i, seq in enumerate(seqs) if seq.options.logprobs is not None]


def step_logprobs(logits: torch.Tensor, seqs: Sequence[Any],
                  tokens: Sequence[int]) -> list[Optional[TokenLogprob]]:
    """Per row of ``logits`` [len(seqs), vocab]: the chosen token's TokenLogprob, or None where not asked."""
    wanted = rows_wanting_logprobs(seqs)
    result: list[Optional[TokenLogprob]] = [None] * len(seqs)
    if not wanted:
        return result
    device = logits.device
    rows = torch.tensor(wanted, device=device)
    log_probs = torch.log_softmax(logits.index_select(0, rows).float(), dim=-1)
    chosen = torch.tensor([tokens[i] for i in wanted], device=device)
    chosen_logprobs = log_probs.gather(1, chosen[:, None])[:, 0]
    k = max(seqs[i].options.logprobs for i in wanted)
    top = log_probs.topk(k, dim=-1) if k else None
    values = torch.cat([chosen_logprobs[:, None], top.values], dim=1) if top is not None else chosen_logprobs[:, None]
    values, top_ids = values.tolist(), top.indices.tolist() if top is not None else [[] for _ in wanted]
    for position, row in enumerate(wanted):
        asked = seqs[row].options.logprobs
        result[row] = TokenLogprob(tokens[row], values[position][0], tuple(top_ids[position][:asked]),
                                   tuple(values[position][1:1 + asked]))
    return result
