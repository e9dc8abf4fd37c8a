"""Blocks whose output is normalised before the residual add ("sandwich" norms: Gemma 2 and 3's
``post_attention_layernorm`` and ``post_feedforward_layernorm``), with the Gemmas' (1 + w) RMSNorm in
float32 (:class:`~mii_core.model.norm.OffsetRMSNorm`). Engine parameter of each: ``post_norm.weight``."""
from __future__ import annotations

import torch

from mii_core.model.attention import Attention
from mii_core.model.mlp import MLP
from mii_core.model.norm import OffsetRMSNorm


class PostNormAttention(Attention):
    """The core's attention (or, first in a subclass's bases, any attention it is mixed with) with a norm on
    its output."""

    def __init__(self, spec, ctx, kernels, device, dtype, layer_index: int = 0):
        super().__init__(spec, ctx, kernels, device, dtype, layer_index)
        self.post_norm = OffsetRMSNorm(spec.hidden_size, spec.norm_eps, kernels, device, dtype)

    def forward(self, hidden, batch, rope, kv_cache) -> torch.Tensor:
        return self.post_norm(super().forward(hidden, batch, rope, kv_cache))


class PostNormMLP(MLP):
    """The core's gated MLP with a norm on its output."""

    def __init__(self, spec, ctx, kernels, device, dtype, layer_index: int = 0):
        super().__init__(spec, ctx, kernels, device, dtype)
        self.post_norm = OffsetRMSNorm(spec.hidden_size, spec.norm_eps, kernels, device, dtype)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.post_norm(super().forward(hidden))
