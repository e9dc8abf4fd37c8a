"""RMSNorm or LayerNorm through the kernel ops (whole on every rank: nothing to shard)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from mii_core.model.parameters import empty_parameter, load_whole


class Norm(nn.Module):
    """RMSNorm or LayerNorm through the kernel registry; ``bias=False``: a LayerNorm without bias (MPT's)."""

    def __init__(self, kind: str, size: int, eps: float, kernels, device: torch.device, dtype: torch.dtype,
                 bias: bool = True):
        super().__init__()
        self.kind, self.eps, self.kernels = kind, eps, kernels
        self.weight = empty_parameter((size,), device, dtype)
        self.weight.weight_loader = load_whole
        self.bias = None
        if kind == "layer" and bias:
            self.bias = empty_parameter((size,), device, dtype)
            self.bias.weight_loader = load_whole

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None):
        """norm(x); with ``residual``: (norm(x + residual), x + residual), fused by the kernel."""
        if self.kind == "rms":
            return self.kernels.rms_norm(x, self.weight, self.eps, residual)
        return self.kernels.layer_norm(x, self.weight, self.bias, self.eps, residual)


class OffsetRMSNorm(nn.Module):
    """Gemma's RMSNorm through the kernels' ``offset_rms_norm``: the checkpoint stores w, the norm scales by
    (1 + w), in float32 and cast last (HF's GemmaRMSNorm order, which differs from Llama's ``rms_norm`` in
    bf16/fp16). Engine parameter: ``weight`` (w as stored)."""

    def __init__(self, size: int, eps: float, kernels, device: torch.device, dtype: torch.dtype):
        super().__init__()
        self.eps, self.kernels = eps, kernels
        self.weight = empty_parameter((size,), device, dtype)
        self.weight.weight_loader = load_whole

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None):
        """norm(x); with ``residual``: (norm(x + residual), x + residual), fused by the kernel, as :class:`Norm`."""
        return self.kernels.offset_rms_norm(x, self.weight, self.eps, residual)


def offset_rms_norm(spec, kernels, device: torch.device, dtype: torch.dtype) -> OffsetRMSNorm:
    """A ``DecoderParts.norm`` factory: :class:`OffsetRMSNorm` over the hidden size (the Gemmas')."""
    return OffsetRMSNorm(spec.hidden_size, spec.norm_eps, kernels, device, dtype)
