"""RMSNorm or LayerNorm through the kernel ops (whole on every rank: nothing to shard)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from mii_core.model.parameters import empty_parameter, load_whole


class Norm(nn.Module):
    """RMSNorm or LayerNorm through the kernel registry."""

    def __init__(self, kind: str, size: int, eps: float, kernels, device: torch.device, dtype: torch.dtype):
        super().__init__()
        self.kind, self.eps, self.kernels = kind, eps, kernels
        self.weight = empty_parameter((size,), device, dtype)
        self.weight.weight_loader = load_whole
        self.bias = None
        if kind == "layer":
            self.bias = empty_parameter((size,), device, dtype)
            self.bias.weight_loader = load_whole

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None):
        """norm(x); with ``residual``: (norm(x + residual), x + residual), fused by the kernel."""
        if self.kind == "rms":
            return self.kernels.rms_norm(x, self.weight, self.eps, residual)
        return self.kernels.layer_norm(x, self.weight, self.bias, self.eps, residual)
