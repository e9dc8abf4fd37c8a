from __future__ import annotations

import torch

from mii_core.model.ops import join_amax


def _with_residual(norm, x: torch.Tensor, residual, amax: torch.Tensor | None = None):
    """norm(x), or (norm(x + residual), x + residual); with ``amax``, max |normed| joined into it."""
    summed = x if residual is None else x + residual
    normed = norm(summed)
    if amax is not None:
        join_amax(amax, normed)
    return normed if residual is None else (normed, summed)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, residual=None, amax=None):
    # float32 statistics, cast back before the weight: the order HF Llama uses, for exact parity
    def norm(t: torch.Tensor) -> torch.Tensor:
        t32 = t.float()
        return weight * (t32 * torch.rsqrt(t32.pow(2).mean(-1, keepdim=True) + eps)).to(t.dtype)

    return _with_residual(norm, x, residual, amax)


def offset_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, residual=None, amax=None):
    # HF GemmaRMSNorm's order: (1 + w) and the product in float32, one cast at the end
    def norm(t: torch.Tensor) -> torch.Tensor:
        t32 = t.float()
        normed = t32 * torch.rsqrt(t32.pow(2).mean(-1, keepdim=True) + eps)
        return (normed * (1.0 + weight.float())).to(t.dtype)

    return _with_residual(norm, x, residual, amax)


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias, eps: float, residual=None, amax=None):
    return _with_residual(lambda t: torch.nn.functional.layer_norm(t, (t.shape[-1],), weight, bias, eps),
                          x, residual, amax)


for _norm in (rms_norm, offset_rms_norm, layer_norm):
    _norm.joins_amax = True
