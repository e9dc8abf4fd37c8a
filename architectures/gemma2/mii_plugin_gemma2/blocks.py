"""Gemma 2's blocks: attention and MLP each followed by a (1 + w) RMSNorm of its own before the residual
add (``post_attention_layernorm``, ``post_feedforward_layernorm``), the attention logits soft-capped, and
the final logits soft-capped: tanh(x / cap) * cap on the float32 logits."""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

import torch

from mii_core.model.attention import Attention
from mii_core.model.decoder import DecoderModel
from mii_core.model.mlp import MLP
from mii_core.model.norm import OffsetRMSNorm


class PostNormAttention(Attention):
    """The core's attention with the op's ``logit_softcap`` set and a norm on its output
    (engine parameter ``post_norm.weight``)."""

    def __init__(self, spec, ctx, kernels, device, dtype, layer_index: int = 0, *, softcap: Optional[float]):
        super().__init__(spec, ctx, kernels, device, dtype, layer_index)
        self.params = replace(self.params, logit_softcap=softcap)
        self.post_norm = OffsetRMSNorm(spec.hidden_size, spec.norm_eps, device, dtype)

    def forward(self, hidden, batch, rope, kv_cache) -> torch.Tensor:
        return self.post_norm(super().forward(hidden, batch, rope, kv_cache))


class PostNormMLP(MLP):
    """The core's gated MLP with a norm on its output (engine parameter ``post_norm.weight``)."""

    def __init__(self, spec, ctx, kernels, device, dtype, layer_index: int = 0):
        super().__init__(spec, ctx, kernels, device, dtype)
        self.post_norm = OffsetRMSNorm(spec.hidden_size, spec.norm_eps, device, dtype)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.post_norm(super().forward(hidden))


class SoftcappedLogitsModel(DecoderModel):
    """The core's decoder whose float32 logits are soft-capped at ``final_softcap`` (None: as they are)."""

    def __init__(self, *args, final_softcap: Optional[float], **kwargs):
        super().__init__(*args, **kwargs)
        self.final_softcap = final_softcap

    def logits(self, last_hidden: torch.Tensor) -> torch.Tensor:
        logits = super().logits(last_hidden)
        if self.final_softcap is None:
            return logits
        return torch.tanh(logits / self.final_softcap) * self.final_softcap
