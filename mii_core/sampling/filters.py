"""Logit filtering in MII's order: min-p (vLLM's, before top-k/top-p as there), top-k, then top-p, then
temperature. Vectorised over rows."""
from __future__ import annotations

from typing import Optional, Union

import torch

RowValues = Union[None, int, float, torch.Tensor]


def _per_row(value: RowValues, rows: int, device: torch.device,
             dtype: torch.dtype = torch.float32) -> Optional[torch.Tensor]:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=dtype).reshape(rows, 1)
    return torch.full((rows, 1), float(value), device=device, dtype=dtype)


def filter_logits(logits: torch.Tensor, top_k: RowValues = None, top_p: RowValues = None,
                  temperature: RowValues = None, min_p: RowValues = None) -> torch.Tensor:
    """Returns float32 logits [rows, vocab] with removed entries at -inf, then scaled by 1/temperature.

    Each knob is a scalar for every row, a per-row tensor, or None (off). top_k keeps the k largest;
    top_p keeps the smallest set of most likely tokens (after top-k) whose probability reaches p: the
    token that crosses p always stays, and a row with top_p 1.0 is left alone. With a temperature,
    each row's best logit is first shifted to 0 (softmax does not change), so a tiny temperature
    gives 0 for the best token and -inf for the rest: greedy, never inf - inf = NaN. min_p (vLLM's and
    HF's) removes the tokens whose probability at the row's temperature is below min_p times the best one's.
    """
    rows, vocab = logits.shape
    out = logits.float().clone()
    m = _per_row(min_p, rows, out.device)
    if m is not None:
        _remove_below_min_p(out, m, _per_row(temperature, rows, out.device))
    k = _per_row(top_k, rows, out.device)
    p = _per_row(top_p, rows, out.device, torch.float64)  # 0.99999 must not round to float32's 0.9999900
    if k is not None or p is not None:
        sorted_logits, order = out.sort(dim=-1, descending=True)
        remove = torch.zeros_like(sorted_logits, dtype=torch.bool)
        if k is not None:
            ranks = torch.arange(vocab, device=out.device)[None, :]
            remove |= ranks >= k.clamp(max=vocab)
        if p is not None:
            remove |= _beyond_top_p(sorted_logits.masked_fill(remove, float("-inf")), p)
        out.scatter_(1, order, sorted_logits.masked_fill(remove, float("-inf")))
    t = _per_row(temperature, rows, out.device)
    if t is None:
        return out
    # below the smallest normal float32 a temperature underflows to 0 (x / 0 = NaN for the best token)
    t = t.clamp(min=torch.finfo(torch.float32).tiny)
    return (out - out.max(dim=-1, keepdim=True).values) / t


def _remove_below_min_p(out: torch.Tensor, min_p: torch.Tensor, temperature: Optional[torch.Tensor]) -> None:
    """p_i < min_p * p_max at temperature T is (l_i - l_max) / T < log(min_p): no softmax needed, and
    min_p 0 (log: -inf) removes nothing."""
    scaled = out - out.max(dim=-1, keepdim=True).values
    if temperature is not None:
        scaled = scaled / temperature.clamp(min=torch.finfo(torch.float32).tiny)
    out.masked_fill_(scaled < min_p.log(), float("-inf"))


def _beyond_top_p(sorted_logits: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Which sorted entries lie past the smallest prefix whose probability reaches p.

    The mass before a token is the previous entry of the same cumulative sum (not cumsum - prob,
    which rounds differently), so the token whose cumulative sum first reaches p is always kept.
    float64 keeps the sum from reaching p early on a large vocabulary; p = 1.0 removes nothing.
    """
    probs = sorted_logits.double().softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1).roll(1, dims=-1)
    mass_before[:, 0] = 0.0
    return (mass_before >= p) & (p < 1.0)
