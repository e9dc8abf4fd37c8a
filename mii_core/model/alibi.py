"""ALiBi (Press et al.): attention scores biased by ``slope_h · (j - p)`` instead of rotary positions, through
the paged attention op's ``alibi_slopes`` (Bloom, MPT). A family passes :class:`AlibiAttention` as its
``DecoderParts.attention`` (with ``rope=None`` in its spec); one whose slopes are rounded differently
subclasses it and overrides :meth:`AlibiAttention.head_slopes`."""
from __future__ import annotations

import math
from dataclasses import replace

import torch

from mii_core.model.attention import Attention


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """Each head's slope as HF's Bloom computes them (``build_alibi_tensor``: float32 powers, so bit for
    bit): the geometric series 2^(-8i/n) for the largest power of two n of heads, then every other slope
    of the next power's series. MPT's recipe gives the same values up to float32 rounding."""
    closest = 2 ** math.floor(math.log2(num_heads))
    base = torch.tensor(2 ** (-(2 ** -(math.log2(closest) - 3))), dtype=torch.float32)
    slopes = torch.pow(base, torch.arange(1, 1 + closest, dtype=torch.int32))
    if closest != num_heads:
        extra_base = torch.tensor(2 ** (-(2 ** -(math.log2(2 * closest) - 3))), dtype=torch.float32)
        odd_powers = torch.arange(1, 1 + 2 * (num_heads - closest), 2, dtype=torch.int32)
        slopes = torch.cat([slopes, torch.pow(extra_base, odd_powers)])
    return slopes


class AlibiAttention(Attention):
    """The core's attention with its scores biased by ALiBi; each rank keeps the slopes of its own heads
    (the query heads are split evenly over the ranks)."""

    def __init__(self, spec, ctx, kernels, device, dtype, layer_index: int = 0):
        super().__init__(spec, ctx, kernels, device, dtype, layer_index)
        if self.rotary_dim:
            raise ValueError("ALiBi attention replaces rotary positions: build its spec with rope=None")
        first, count = ctx.even_slice(spec.num_heads)
        slopes = self.head_slopes(spec.num_heads)[first:first + count]
        self.params = replace(self.params, alibi_slopes=slopes.to(device=device, dtype=torch.float32).contiguous())

    def head_slopes(self, num_heads: int) -> torch.Tensor:
        """All ``num_heads`` slopes, float32 [num_heads]; Bloom's recipe here."""
        return alibi_slopes(num_heads)
