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
    """Gemma's RMSNorm: the checkpoint stores w, the norm scales by (1 + w). Statistics, the scaling and
    the (1 + w) itself in float32, cast to the input's dtype only at the end: HF's order (GemmaRMSNorm),
    which differs from Llama's (cast, then weight) in bf16/fp16. Engine parameter: ``weight`` (w as stored).
    Eager torch: the kernels' ``rms_norm`` casts before the weight, so it cannot give this order."""

    def __init__(self, size: int, eps: float, device: torch.device, dtype: torch.dtype):
        super().__init__()
        self.eps = eps
        self.weight = empty_parameter((size,), device, dtype)
        self.weight.weight_loader = load_whole

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None):
        """norm(x); with ``residual``: (norm(x + residual), x + residual), as :class:`Norm`."""
        if residual is None:
            return self._norm(x)
        summed = x + residual
        return self._norm(summed), summed

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * (1.0 + self.weight.float())).to(x.dtype)


def offset_rms_norm(spec, kernels, device: torch.device, dtype: torch.dtype) -> OffsetRMSNorm:
    """A ``DecoderParts.norm`` factory: :class:`OffsetRMSNorm` over the hidden size (the Gemmas')."""
    return OffsetRMSNorm(spec.hidden_size, spec.norm_eps, device, dtype)
