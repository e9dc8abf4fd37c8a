"""Logit filtering in MII's order: top-k, then top-p, then temperature. Vectorised over rows."""
from __future__ import annotations

from typing import Optional, Union

import torch

RowValues = Union[None, int, float, torch.Tensor]


def _per_row(value: RowValues, rows: int, default: float, device: torch.device) -> Optional[torch.Tensor]:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=torch.float32).reshape(rows, 1)
    return torch.full((rows, 1), float(value), device=device)


def filter_logits(logits: torch.Tensor, top_k: RowValues = None, top_p: RowValues = None,
                  temperature: RowValues = None) -> torch.Tensor:
    """Returns float32 logits [rows, vocab] with removed entries at -inf, scaled by 1/temperature.

    Each knob is a scalar for every row, a per-row tensor, or None (off). top_k keeps the k largest;
    top_p keeps the smallest set of most likely tokens (after top-k) whose probability reaches p, and
    always the most likely one. A per-row top_k of vocab size or top_p of 1.0 leaves that row alone.
    """
    rows, vocab = logits.shape
    out = logits.float().clone()
    k = _per_row(top_k, rows, vocab, out.device)
    p = _per_row(top_p, rows, 1.0, out.device)
    if k is not None or p is not None:
        sorted_logits, order = out.sort(dim=-1, descending=True)
        remove = torch.zeros_like(sorted_logits, dtype=torch.bool)
        if k is not None:
            ranks = torch.arange(vocab, device=out.device)[None, :]
            remove |= ranks >= k.clamp(max=vocab)
        if p is not None:
            probs = sorted_logits.masked_fill(remove, float("-inf")).softmax(dim=-1)
            mass_before = probs.cumsum(dim=-1) - probs
            remove |= mass_before >= p
            remove[:, 0] = False
        out.scatter_(1, order, sorted_logits.masked_fill(remove, float("-inf")))
    t = _per_row(temperature, rows, 1.0, out.device)
    return out if t is None else out / t
