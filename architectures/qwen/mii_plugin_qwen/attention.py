"""Qwen (v1)'s log-n attention scaling (``use_logn_attn``): past ``seq_length`` each rotated query is scaled
by log_seq_length(position + 1), as modeling_qwen.py does, before the attention op."""
from __future__ import annotations

import math

import torch

from mii_core.batch import RaggedBatch
from mii_core.model.attention import Attention


class LognAttention(Attention):
    """The core's attention with Qwen's query scaling; ``logn_base`` is the config's ``seq_length``."""

    def __init__(self, *args, logn_base: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.logn_base = logn_base

    def adjust_queries(self, q: torch.Tensor, batch: RaggedBatch) -> torch.Tensor:
        return q * logn_factor(batch.positions, self.logn_base, q.dtype)[:, None, None]


def logn_factor(positions: torch.Tensor, base: int, dtype: torch.dtype) -> torch.Tensor:
    """Qwen's table holds log(i, seq_length) for i > seq_length, else 1, and the query at position p takes
    entry p, i = p + 1. Worked out in float64 as Python's math.log, stored in float32 as Qwen's table, then
    cast to the query's dtype."""
    length = positions.to(torch.float64) + 1
    factor = torch.where(length > base, torch.log(length) / math.log(base), torch.ones_like(length))
    return factor.to(torch.float32).to(dtype)
