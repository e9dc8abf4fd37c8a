"""Fused gated activation: ``act(gate) * up`` in one pass over ``x = [gate | up]``.

Contract (``mii_core.model.ops.gated_activation``): ``x`` [..., 2F] holding [gate | up]; returns a new
contiguous [..., F] tensor in x's dtype. ``x`` may be a strided view (any row stride; the feature
stride is passed through too). The rounding follows the reference, op by op: the activation is
rounded to x's dtype before the product, as ``act(gate) * up`` does in PyTorch.

With ``amax`` (mode "fp8", a step whose down projection quantizes its activations per tensor) the kernel
also joins the largest |output| into it, so that the down projection's quantization need not read the output
again for its scale: the H200 profile of W3's prefill step (2026-12-03) had that read (``_amax_kernel``) at
5.3 ms of 128, most of it on the gated activation's output, the widest of the four.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from mii_kernels.triton.amax import join_max
from mii_kernels.triton.pdl import pdl_launch, pdl_wait

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


@triton.jit(do_not_specialize=["rows"])
def _gated_kernel(x_ptr, out_ptr, amax_ptr, rows, features, stride_xt, stride_xf, ACTIVATION: tl.constexpr,
                  BLOCK: tl.constexpr, JOIN_AMAX: tl.constexpr, PDL: tl.constexpr):
    """Rows program_id(0), program_id(0) + num_programs(0), ..., BLOCK columns of each; with JOIN_AMAX their
    largest |output| joined into amax_ptr by one atomic max a program (exact: a maximum does not depend on
    the order). The rows a program takes are a runtime loop, not a constexpr, and ``rows`` is not
    specialised: one compiled kernel serves every step's token count, so none compiles mid-run (the warm-up
    at start-up cannot meet every count; a constexpr of rows a program cost W3 a compile in its timed run)."""
    pdl_wait(PDL)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    dtype = out_ptr.dtype.element_ty
    largest = tl.zeros([BLOCK], dtype=tl.float32)
    for first in range(0, rows, tl.num_programs(0)):
        token = tl.program_id(0).to(tl.int64) + first  # int64: 8,192 rows of 2 x 14,336 already reach 2^28
        row = x_ptr + token * stride_xt
        in_rows = cols < tl.where(token < rows, features, 0)  # the last turn's programs past the last row: none
        gate = tl.load(row + cols * stride_xf, mask=in_rows, other=0.0).to(tl.float32)
        up = tl.load(row + (cols + features) * stride_xf, mask=in_rows, other=0.0).to(tl.float32)
        activated = apply_activation(gate, ACTIVATION).to(dtype).to(tl.float32)
        out = (activated * up).to(dtype)
        tl.store(out_ptr + token * features + cols, out, mask=in_rows)
        if JOIN_AMAX:  # masked lanes hold act(0) * 0 = 0
            largest = tl.maximum(largest, tl.abs(out.to(tl.float32)))
    if JOIN_AMAX:
        join_max(amax_ptr, tl.max(largest, axis=0))


# Row programs when the kernel joins an absmax: one atomic a program, so W3's 8,192 rows of 14 column blocks take
# 512 programs of 16 rows (7,168 atomics on one address, not 114,688); up to 512 rows, a program a row.
_AMAX_ROW_PROGRAMS = 512


def gated_activation(x: torch.Tensor, activation: str, amax: torch.Tensor | None = None) -> torch.Tensor:
    """The contract in mii_core/model/ops.py; ``amax`` (float32 [] on x's device) gets max |output| joined."""
    code = activation_id(activation)
    if x.shape[-1] % 2:
        raise ValueError(f"gated_activation needs an even last dimension ([gate | up]), got {x.shape[-1]}")
    features = x.shape[-1] // 2
    rows = x.reshape(-1, x.shape[-1])  # a view for 2-D strided input; copies only odd N-D layouts
    out = torch.empty((rows.shape[0], features), dtype=x.dtype, device=x.device)
    if rows.shape[0] and features:
        block = min(1024, triton.next_power_of_2(features))
        row_programs = rows.shape[0] if amax is None else min(rows.shape[0], _AMAX_ROW_PROGRAMS)
        grid = (row_programs, triton.cdiv(features, block))
        _gated_kernel[grid](rows, out, out if amax is None else amax, rows.shape[0], features, rows.stride(0),
                            rows.stride(1), ACTIVATION=code, BLOCK=block, JOIN_AMAX=amax is not None,
                            num_warps=4, **pdl_launch(rows))
    return out.view(*x.shape[:-1], features)


gated_activation.joins_amax = True
