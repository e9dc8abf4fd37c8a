"""RMSNorm or LayerNorm through the kernel ops (whole on every rank: nothing to shard)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from mii_core.model.parameters import empty_parameter, load_whole


class FeedsLinears:
    """A norm whose output goes straight into known linears (:meth:`feed`): where their product would quantize
    that output per tensor (mode "fp8", many tokens), the norm's kernel joins its absmax as it writes it and each
    linear is told (``expect_input_amax``), so no pass over the output is spent on the scale."""

    feeds: tuple = ()  # a tuple, not a module list: the linears belong to their blocks, not to the norm

    def feed(self, *linears) -> None:
        self.feeds = tuple(linears)

    def _amax_for(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        tokens = x.shape[0] if x.dim() > 1 else 1
        return next((a for a in (linear.activation_amax(tokens) for linear in self.feeds) if a is not None), None)

    def _hand_over(self, out, amax: Optional[torch.Tensor], residual: Optional[torch.Tensor]):
        if amax is not None:
            normed = out if residual is None else out[0]
            for linear in self.feeds:
                linear.expect_input_amax(normed, amax)
        return out


class Norm(FeedsLinears, nn.Module):
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

    def folds_into_linear(self) -> bool:
        """Whether a linear may compute this norm as it reads its input (``deferred_norm``): an RMSNorm whose
        forward is this one (the fused ops' contract is ``rms_norm``'s)."""
        return self.kind == "rms" and type(self).forward is Norm.forward

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None):
        """norm(x); with ``residual``: (norm(x + residual), x + residual), fused by the kernel."""
        amax = self._amax_for(x)
        if self.kind == "rms":
            out = self.kernels.rms_norm(x, self.weight, self.eps, residual, amax)
        else:
            out = self.kernels.layer_norm(x, self.weight, self.bias, self.eps, residual, amax)
        return self._hand_over(out, amax, residual)


class OffsetRMSNorm(FeedsLinears, nn.Module):
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
        amax = self._amax_for(x)
        return self._hand_over(self.kernels.offset_rms_norm(x, self.weight, self.eps, residual, amax), amax, residual)


def offset_rms_norm(spec, kernels, device: torch.device, dtype: torch.dtype) -> OffsetRMSNorm:
    """A ``DecoderParts.norm`` factory: :class:`OffsetRMSNorm` over the hidden size (the Gemmas')."""
    return OffsetRMSNorm(spec.hidden_size, spec.norm_eps, kernels, device, dtype)
