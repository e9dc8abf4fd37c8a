"""RMSNorm and LayerNorm, each fused with the residual add: one read of x (and residual), one write.

Contract (``mii_core.model.ops.rms_norm`` / ``layer_norm``): ``x`` [..., H] and ``residual`` (same
shape) may be strided views along the rows; the returned tensors are new and contiguous. With a
residual, ``summed = x + residual`` is rounded to its dtype first and the norm reads that rounded
value, exactly as the reference does; the function returns ``(norm(summed), summed)``.
Statistics are float32. RMSNorm keeps HF Llama's cast order: the normalised row is cast to x's dtype
before it is multiplied by the weight (the product rounded to the promoted dtype of x and weight).
``offset_rms_norm`` (the same kernel, ``OFFSET`` set) keeps HF Gemma's: ``normed * (1 + w)`` all in
float32, rounded once to the normed row's dtype.
LayerNorm computes ``(x - mean) * rstd * weight + bias`` in float32 and rounds once, as
``torch.nn.functional.layer_norm`` does.
With ``amax`` each program also joins its row's largest |output| by one atomic max: the next projection's
FP8 activation scale (mode "fp8"), which would otherwise cost a pass over the output of its own.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from mii_kernels.triton.amax import join_max
from mii_kernels.triton.pdl import pdl_launch, pdl_wait


@triton.jit
def _input_row(x_ptr, res_ptr, sum_ptr, row, cols, mask, width, stride_x, stride_r, stride_xc, stride_rc,
               HAS_RESIDUAL: tl.constexpr):
    """The row the norm reads: x, or x + residual rounded to the summed dtype (and stored as ``summed``)."""
    x = tl.load(x_ptr + row * stride_x + cols * stride_xc, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        r = tl.load(res_ptr + row * stride_r + cols * stride_rc, mask=mask, other=0.0)
        x = (x.to(tl.float32) + r.to(tl.float32)).to(sum_ptr.dtype.element_ty)
        tl.store(sum_ptr + row * width + cols, x, mask=mask)
    return x.to(tl.float32)


@triton.jit
def _store_row(out_ptr, amax_ptr, row, cols, mask, width, y, JOIN_AMAX: tl.constexpr):
    """The normalised row stored in out's dtype; with JOIN_AMAX its largest |value| as stored joined into
    amax_ptr by one atomic max (masked columns hold 0)."""
    stored = y.to(out_ptr.dtype.element_ty)
    tl.store(out_ptr + row * width + cols, stored, mask=mask)
    if JOIN_AMAX:
        join_max(amax_ptr, tl.max(tl.where(mask, tl.abs(stored.to(tl.float32)), 0.0), axis=0))


@triton.jit
def _rms_kernel(x_ptr, res_ptr, sum_ptr, w_ptr, out_ptr, amax_ptr, width, eps, stride_x, stride_r, stride_xc,
                stride_rc, HAS_RESIDUAL: tl.constexpr, OFFSET: tl.constexpr, BLOCK: tl.constexpr,
                JOIN_AMAX: tl.constexpr, PDL: tl.constexpr):
    pdl_wait(PDL)
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < width
    x32 = _input_row(x_ptr, res_ptr, sum_ptr, row, cols, mask, width, stride_x, stride_r, stride_xc, stride_rc,
                     HAS_RESIDUAL)
    rstd = tl.rsqrt(tl.sum(x32 * x32, axis=0) / width + eps)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    if OFFSET:  # HF Gemma: (1 + w) and the product in float32, one rounding at the store
        y = (x32 * rstd) * (1.0 + w)
    else:  # HF Llama: cast back, then the weight
        y = w * (x32 * rstd).to(sum_ptr.dtype.element_ty).to(tl.float32)
    _store_row(out_ptr, amax_ptr, row, cols, mask, width, y, JOIN_AMAX)


@triton.jit
def _layer_kernel(x_ptr, res_ptr, sum_ptr, w_ptr, b_ptr, out_ptr, amax_ptr, width, eps, stride_x, stride_r,
                  stride_xc, stride_rc, HAS_RESIDUAL: tl.constexpr, HAS_WEIGHT: tl.constexpr,
                  HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr, JOIN_AMAX: tl.constexpr, PDL: tl.constexpr):
    pdl_wait(PDL)
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < width
    x32 = _input_row(x_ptr, res_ptr, sum_ptr, row, cols, mask, width, stride_x, stride_r, stride_xc, stride_rc,
                     HAS_RESIDUAL)
    mean = tl.sum(x32, axis=0) / width
    centred = tl.where(mask, x32 - mean, 0.0)
    rstd = tl.rsqrt(tl.sum(centred * centred, axis=0) / width + eps)
    y = centred * rstd
    if HAS_WEIGHT:
        y = y * tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        y = y + tl.load(b_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    _store_row(out_ptr, amax_ptr, row, cols, mask, width, y, JOIN_AMAX)


def _launch_shape(x: torch.Tensor, residual):
    """Rows as 2-D views (no copy for row-strided input) and the outputs to fill."""
    rows = x.reshape(-1, x.shape[-1])
    res_rows = residual.reshape(-1, residual.shape[-1]) if residual is not None else rows
    summed = torch.empty(rows.shape, dtype=torch.promote_types(x.dtype, residual.dtype),
                         device=x.device) if residual is not None else rows
    block = triton.next_power_of_2(rows.shape[1])
    # about 16 bytes in flight per thread, a row to one CTA of 1..16 warps
    warps = min(16, max(1, block * x.element_size() // (32 * 16)))
    return rows, res_rows, summed, block, warps


def _result(out, summed, x, residual):
    out = out.view(x.shape)
    return out if residual is None else (out, summed.view(x.shape))


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float, residual, offset: bool, amax):
    rows, res_rows, summed, block, warps = _launch_shape(x, residual)
    # Llama's ``weight * normed.to(x.dtype)`` has the promoted dtype; Gemma's casts to the normed row's
    out_dtype = summed.dtype if offset else torch.promote_types(weight.dtype, summed.dtype)
    out = torch.empty(rows.shape, dtype=out_dtype, device=x.device)
    if rows.shape[0]:
        _rms_kernel[(rows.shape[0],)](
            rows, res_rows, summed, weight, out, out if amax is None else amax, rows.shape[1], eps,
            rows.stride(0), res_rows.stride(0), rows.stride(1), res_rows.stride(1),
            HAS_RESIDUAL=residual is not None, OFFSET=offset, BLOCK=block, JOIN_AMAX=amax is not None,
            num_warps=warps, **pdl_launch(rows))
    return _result(out, summed, x, residual)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, residual=None, amax=None):
    return _rms(x, weight, eps, residual, offset=False, amax=amax)


def offset_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, residual=None, amax=None):
    return _rms(x, weight, eps, residual, offset=True, amax=amax)


def layer_norm(x: torch.Tensor, weight, bias, eps: float, residual=None, amax=None):
    rows, res_rows, summed, block, warps = _launch_shape(x, residual)
    out = torch.empty(rows.shape, dtype=summed.dtype, device=x.device)
    if rows.shape[0]:
        _layer_kernel[(rows.shape[0],)](
            rows, res_rows, summed, weight if weight is not None else rows, bias if bias is not None else rows,
            out, out if amax is None else amax, rows.shape[1], eps, rows.stride(0), res_rows.stride(0),
            rows.stride(1), res_rows.stride(1), HAS_RESIDUAL=residual is not None, HAS_WEIGHT=weight is not None,
            HAS_BIAS=bias is not None, BLOCK=block, JOIN_AMAX=amax is not None, num_warps=warps,
            **pdl_launch(rows))
    return _result(out, summed, x, residual)


for _norm in (rms_norm, offset_rms_norm, layer_norm):
    _norm.joins_amax = True
