"""Log-probabilities of the tokens a step chose, and their top alternatives (vLLM's ``logprobs``).

As vLLM v1 by default, they are of the model's raw logits: ``log_softmax`` in float32 of the step's
logits before temperature, top-k/top-p or the early-EOS mask change them. One vectorised pass over the
rows that asked (one gather, one ``topk`` at the largest k asked), read to the host in one copy per
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
    scored = token_logprobs(logits, wanted, [tokens[i] for i in wanted], [seqs[i].options.logprobs for i in wanted])
    for row, logprob in zip(wanted, scored):
        result[row] = logprob
    return result


def token_logprobs(logits: torch.Tensor, rows: Sequence[int], tokens: Sequence[int],
                   counts: Sequence[int]) -> list[TokenLogprob]:
    """For each ``rows[j]`` of ``logits`` [N, vocab]: ``tokens[j]``'s log-probability there and the
    ``counts[j]`` most likely tokens' (generated tokens and prompt tokens alike). One batched pass on the
    logits' device, read to the host in one copy."""
    if not rows:
        return []
    device = logits.device
    log_probs = torch.log_softmax(logits.index_select(0, torch.tensor(rows, device=device)).float(), dim=-1)
    chosen = log_probs.gather(1, torch.tensor(list(tokens), device=device)[:, None])
    k = max(counts)
    if k:
        top = log_probs.topk(k, dim=-1)
        # ids travel as float32 in the same copy: exact below 2**24, far above any vocabulary
        packed = torch.cat([chosen, top.values, top.indices.float()], dim=1).tolist()
    else:
        packed = chosen.tolist()
    return [TokenLogprob(token, row[0], tuple(int(i) for i in row[1 + k:1 + k + asked]), tuple(row[1:1 + asked]))
            for token, row, asked in zip(tokens, packed, counts)]
