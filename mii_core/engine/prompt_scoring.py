"""Prompt log-probabilities (vLLM's ``prompt_logprobs``), chunk by chunk as a prompt is computed.

The logits at position p score the token at p + 1. A sequence scoring its prompt gets the logits of
every new token of its prompt chunks (``StepPlan.full_logits``), so each chunk scores the prompt tokens
that follow its positions, up to the prompt's last token (whose logits sample the first new token).
Every scored row of a step goes through one batched pass (:func:`token_logprobs`), float32, of the raw
logits as the generated tokens' logprobs. Such a sequence never starts on prefix-cached blocks (the
scheduler skips the cache for it, as vLLM does), so its chunks cover every position it has yet to score.
"""
from __future__ import annotations

import torch

from mii_core.batch import logit_rows
from mii_core.sampling.logprobs import token_logprobs
from mii_core.scheduler.plan import StepPlan


def score_prompt_chunks(logits: torch.Tensor, plan: StepPlan) -> torch.Tensor:
    """Records the prompt logprobs of ``plan``'s scoring rows from ``logits`` (the runner's rows, laid out
    by :func:`logit_rows`); returns the logits of each row's last token [len(plan), vocab]."""
    if not plan.full_logits:
        return logits
    _, last_rows = logit_rows(plan.num_tokens, plan.full_logits)
    rows, targets, counts, owners = [], [], [], []
    for i, seq in enumerate(plan.seqs):
        if not plan.full_logits[i]:
            continue
        first_row, start = last_rows[i] - len(plan.token_lists[i]) + 1, plan.cached[i]
        done = len(seq.prompt_logprobs)  # prompt tokens 1 .. done are scored
        if start > done:
            raise RuntimeError(f"sequence {seq.uid} skipped prompt positions {done}..{start - 1} it had to score "
                               "(engine bug: a scoring sequence started on cached blocks)")
        for position in range(done, min(start + len(plan.token_lists[i]), len(seq.prompt_ids) - 1)):
            rows.append(first_row + position - start)
            targets.append(seq.prompt_ids[position + 1])
            counts.append(seq.options.prompt_logprobs)
            owners.append(seq)
    for seq, logprob in zip(owners, token_logprobs(logits, rows, targets, counts)):
        seq.prompt_logprobs.append(logprob)
    return logits[last_rows]
