"""Fused gated activation: ``act(gate) * up`` in one pass over ``x = [gate | up]``.

Contract (``mii_core.model.ops.gated_activation``): ``x`` [..., 2F] holding [gate | up]; returns a new
contiguous [..., F] tensor in x's dtype. ``x`` may be a strided view (any row stride; the feature
stride is passed through too). The rounding follows the reference, op by op: the activation is
rounded to x's dtype before the product, as ``act(gate) * up`` does in PyTorch.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

_ACTIVATION_IDS = {"silu": 0, "gelu": 1, "gelu_tanh": 2}


def activation_id(activation: str) -> int:
    """The constexpr code of an activation name, or a ValueError naming the supported ones."""
    try:
        return _ACTIVATION_IDS[activation]
    except KeyError:
        raise ValueError(
            f"gated activation '{activation}' is not supported ({', '.join(_ACTIVATION_IDS)})") from None


@triton.jit
def _tanh(x):
    # no portable tl.tanh (the interpreter lacks libdevice); exp overflows to inf, which gives ±1
    return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)


@triton.jit
def apply_activation(x, ACTIVATION: tl.constexpr):
    """``x`` float32; ACTIVATION 0 silu, 1 gelu (erf), 2 gelu (tanh approximation)."""
    if ACTIVATION == 0:
        return x / (1.0 + tl.exp(-x))
    elif ACTIVATION == 1:
        return 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))
    else:
        return 0.5 * x * (1.0 + _tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))


@triton.jit
def _gated_kernel(x_ptr, out_ptr, features, stride_xt, stride_xf, ACTIVATION: tl.constexpr,
                  BLOCK: tl.constexpr):
    token = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < features
    row = x_ptr + token * stride_xt
    gate = tl.load(row + cols * stride_xf, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(row + (cols + features) * stride_xf, mask=mask, other=0.0).to(tl.float32)
    dtype = out_ptr.dtype.element_ty
    activated = apply_activation(gate, ACTIVATION).to(dtype).to(tl.float32)
    tl.store(out_ptr + token * features + cols, (activated * up).to(dtype), mask=mask)


def gated_activation(x: torch.Tensor, activation: str) -> torch.Tensor:
    code = activation_id(activation)
    if x.shape[-1] % 2:
        raise ValueError(f"gated_activation needs an even last dimension ([gate | up]), got {x.shape[-1]}")
    features = x.shape[-1] // 2
    rows = x.reshape(-1, x.shape[-1])  # a view for 2-D strided input; copies only odd N-D layouts
    out = torch.empty((rows.shape[0], features), dtype=x.dtype, device=x.device)
    if rows.shape[0] and features:
        block = min(1024, triton.next_power_of_2(features))
        grid = (rows.shape[0], triton.cdiv(features, block))
        _gated_kernel[grid](rows, out, features, rows.stride(0), rows.stride(1), ACTIVATION=code,
                            BLOCK=block, num_warps=4)
    return out.view(*x.shape[:-1], features)
