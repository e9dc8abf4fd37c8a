"""Rotary embedding of q and k fused with the write of k and v into their KV-cache blocks: one launch.

Contract (``mii_core.model.ops.rotary_write_kv``), with what this kernel accepts:
- ``q`` [T, Hq, D], ``k`` [T, Hkv, D], ``v`` [T, Hkv, Dv]: any strides (views of one fused qkv output are
  the usual case); Hq need not equal Hkv. D and Dv any size (64, 80, 96, 128, 256, 576, ...). ``v`` None
  (values read from their keys, ``value_in_key``): only k is written.
- ``cos``/``sin`` [T, rotary_dim] (any strides), HF's rotate-half layout, or None with ``rotary_dim`` 0.
  ``rotary_dim`` even and at most D; features past it pass through unchanged (partial rotary).
- ``k_cache`` [num_blocks, block_size, Hkv, D], ``v_cache`` [..., Hkv, Dv], any strides; ``slot_mapping`` [T].
  A negative slot writes nothing: padding tokens of a captured CUDA graph may use -1.
- Returns a new contiguous [T, Hq, D] tensor holding the rotated q; the inputs are not modified.
- An FP8 cache (float8_e4m3fn, with ``kv_scales`` [2, Hkv]) is written through its bytes (the
  interpreter has no float8 tensors), each value's byte by :func:`e4m3.e4m3_code`: the GPU's own conversion
  (an FP8 cache needs sm_89+), or under the interpreter integer arithmetic that rounds as PyTorch's cast does,
  to nearest-even (the interpreter's own float8 cast rounds differently).
The arithmetic rounds where the reference does: ``x * cos`` and ``rotate_half(x) * sin`` are each
rounded to x's dtype before their sum (PyTorch's op-by-op order), so results are bit-identical to it.
Compiled for NVIDIA, the products and the sum use round-to-nearest intrinsics: with plain operators the
backend narrowed them to float16 arithmetic and fused product and sum into one fma (one rounding where
PyTorch has two), which changed a quarter of a float16 case's elements by one ulp on the H100. The
interpreter (CPU) has no intrinsics and never fuses, so it keeps the plain operators.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from mii_kernels.triton.e4m3 import e4m3_code, has_nvidia_intrinsics
from mii_kernels.triton.fp8_kv import check_fp8_cache
from mii_kernels.triton.pdl import pdl_launch, pdl_wait


@triton.jit
def _store_heads(dst, x, h, heads, d, mask, stride_dh, stride_dd, scales, QUANTIZE: tl.constexpr,
                 UNFUSED: tl.constexpr):
    """Stores ``x`` [BLOCK_H, BLOCK_D] at ``dst``: as is, or (``QUANTIZE``) as e4m3 bytes of x · 1/scale
    (the reciprocal rounded to nearest, as torch.reciprocal: the plain division may be approximate on a GPU)."""
    if QUANTIZE:
        scale = tl.load(scales + h, mask=h < heads, other=1.0)
        if UNFUSED:
            inverse = libdevice.div_rn(1.0, scale)
        else:
            inverse = 1.0 / scale
        y = tl.minimum(tl.maximum(x.to(tl.float32) * inverse, -448.0), 448.0)
        # an FP8 cache is refused below sm_89 (fp8_kv.py), so an NVIDIA compile converts natively
        tl.store(dst + h * stride_dh + d * stride_dd, e4m3_code(y, UNFUSED), mask=mask)
    else:
        tl.store(dst + h * stride_dh + d * stride_dd, x.to(dst.dtype.element_ty), mask=mask)


@triton.jit
def _rotate_heads(src, dst, cos_row, sin_row, head0, heads, dim, rotary_dim, stride_sh, stride_sd,
                  stride_dh, stride_dd, stride_cd, scales, HAS_ROTARY: tl.constexpr,
                  BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr, UNFUSED: tl.constexpr,
                  QUANTIZE: tl.constexpr):
    """Copies heads [head0, head0 + BLOCK_H) of one token's row ``src`` to ``dst``, rotating the first
    ``rotary_dim`` features of each (and, with ``QUANTIZE``, storing them as e4m3 bytes)."""
    h = head0 + tl.arange(0, BLOCK_H)[:, None]
    d = tl.arange(0, BLOCK_D)[None, :]
    mask = (h < heads) & (d < dim)
    x = tl.load(src + h * stride_sh + d * stride_sd, mask=mask, other=0.0)
    if HAS_ROTARY:
        dtype = x.dtype
        half = rotary_dim // 2
        rotated = d < rotary_dim
        partner = tl.where(d < half, d + half, d - half)
        sign = tl.where(d < half, -1.0, 1.0)
        cos = tl.load(cos_row + d * stride_cd, mask=rotated, other=0.0).to(tl.float32)
        sin = tl.load(sin_row + d * stride_cd, mask=rotated, other=0.0).to(tl.float32)
        x_partner = tl.load(src + h * stride_sh + partner * stride_sd, mask=mask & rotated, other=0.0)
        # rounded as PyTorch rounds ``x * cos + rotate_half(x) * sin`` in x's dtype
        partner_signed = sign * x_partner.to(tl.float32)  # exact: a sign flip
        if UNFUSED:
            first = libdevice.mul_rn(x.to(tl.float32), cos).to(dtype).to(tl.float32)
            second = libdevice.mul_rn(partner_signed, sin).to(dtype).to(tl.float32)
            total = libdevice.add_rn(first, second)
        else:
            first = (x.to(tl.float32) * cos).to(dtype).to(tl.float32)
            second = (partner_signed * sin).to(dtype).to(tl.float32)
            total = first + second
        x = tl.where(rotated, total.to(dtype), x)
    _store_heads(dst, x, h, heads, d, mask, stride_dh, stride_dd, scales, QUANTIZE, UNFUSED)


@triton.jit
def _rotary_write_kernel(q_ptr, k_ptr, v_ptr, cos_ptr, sin_ptr, q_out_ptr, k_cache_ptr, v_cache_ptr, slot_ptr,
                         k_scales, v_scales, q_heads, kv_heads, dim, v_dim, rotary_dim, block_size,
                         stride_qt, stride_qh, stride_qd, stride_kt, stride_kh, stride_kd,
                         stride_vt, stride_vh, stride_vd, stride_ct, stride_cd,
                         stride_kb, stride_ko, stride_kch, stride_kcd,    # k_cache
                         stride_vb, stride_vo, stride_vch, stride_vcd,    # v_cache
                         HAS_ROTARY: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
                         UNFUSED: tl.constexpr, QUANTIZE: tl.constexpr, WRITE_V: tl.constexpr,
                         PDL: tl.constexpr):
    pdl_wait(PDL)
    # grid: (token, head block); the first blocks hold q's heads, the rest k's and v's
    token = tl.program_id(0).to(tl.int64)
    head_block = tl.program_id(1)
    q_blocks = tl.cdiv(q_heads, BLOCK_H)
    cos_row = cos_ptr + token * stride_ct
    sin_row = sin_ptr + token * stride_ct
    if head_block < q_blocks:
        _rotate_heads(q_ptr + token * stride_qt, q_out_ptr + token * q_heads * dim, cos_row, sin_row,
                      head_block * BLOCK_H, q_heads, dim, rotary_dim, stride_qh, stride_qd, dim, 1, stride_cd,
                      k_scales, HAS_ROTARY, BLOCK_H, BLOCK_D, UNFUSED, False)
    else:
        slot = tl.load(slot_ptr + token).to(tl.int64)
        if slot >= 0:
            head0 = (head_block - q_blocks) * BLOCK_H
            block = slot // block_size
            offset = slot % block_size
            _rotate_heads(k_ptr + token * stride_kt, k_cache_ptr + block * stride_kb + offset * stride_ko,
                          cos_row, sin_row, head0, kv_heads, dim, rotary_dim, stride_kh, stride_kd,
                          stride_kch, stride_kcd, stride_cd, k_scales, HAS_ROTARY, BLOCK_H, BLOCK_D,
                          UNFUSED, QUANTIZE)
            if WRITE_V:
                _rotate_heads(v_ptr + token * stride_vt, v_cache_ptr + block * stride_vb + offset * stride_vo,
                              cos_row, sin_row, head0, kv_heads, v_dim, rotary_dim, stride_vh, stride_vd,
                              stride_vch, stride_vcd, stride_cd, v_scales, False, BLOCK_H, BLOCK_D,
                              UNFUSED, QUANTIZE)


def _check(q, k, v, cos, sin, rotary_dim, k_cache, v_cache, kv_scales):
    dim = q.shape[-1]
    if rotary_dim % 2 or not 0 <= rotary_dim <= dim:
        raise ValueError(f"rotary_dim must be even and between 0 and the head size {dim}, got {rotary_dim}")
    if rotary_dim and (cos is None or sin is None):
        raise ValueError("rotary_write_kv needs cos and sin when rotary_dim > 0")
    if k.shape[0] != q.shape[0] or k.shape[2] != dim or (v is not None and v.shape[:2] != k.shape[:2]):
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)} and v {None if v is None else tuple(v.shape)} "
                         f"do not fit together")
    if k_cache.shape[2:] != k.shape[1:]:
        raise ValueError(f"k_cache {tuple(k_cache.shape)} does not hold heads of shape {tuple(k.shape[1:])}")
    if v is not None and v_cache.shape[2:] != v.shape[1:]:
        raise ValueError(f"v_cache {tuple(v_cache.shape)} does not hold heads of shape {tuple(v.shape[1:])}")
    check_fp8_cache(k_cache, kv_scales, q.device, "rotary_write_kv")


def rotary_write_kv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos, sin, rotary_dim: int,
                    k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor,
                    kv_scales=None) -> torch.Tensor:
    """``v`` None: the values are views of the keys (``v_cache`` one of ``k_cache``), written with them."""
    _check(q, k, v, cos, sin, rotary_dim, k_cache, v_cache, kv_scales)
    tokens, q_heads, dim = q.shape
    kv_heads = k.shape[1]
    write_v = v is not None
    v_dim = v.shape[2] if write_v else dim
    v = v if write_v else k  # a placeholder, never read
    q_out = torch.empty((tokens, q_heads, dim), dtype=q.dtype, device=q.device)
    if tokens == 0:
        return q_out
    block_d = triton.next_power_of_2(max(dim, v_dim))
    block_h = max(1, min(triton.next_power_of_2(max(q_heads, kv_heads)), 2048 // block_d))
    grid = (tokens, triton.cdiv(q_heads, block_h) + triton.cdiv(kv_heads, block_h))
    has_rotary = rotary_dim > 0
    cos = cos if has_rotary else q  # unused pointers when there is no rotation
    sin = sin if has_rotary else q
    cos_strides = (cos.stride(0), cos.stride(1)) if has_rotary else (0, 0)
    quantize = kv_scales is not None
    # without quantization the scale pointers are placeholders, never read (q itself: it may have 1 row)
    k_scales, v_scales = (kv_scales[0], kv_scales[1]) if quantize else (q, q)
    if quantize:  # written through the bytes: the interpreter has no float8 tensors
        k_cache, v_cache = k_cache.view(torch.uint8), v_cache.view(torch.uint8)
    _rotary_write_kernel[grid](
        q, k, v, cos, sin, q_out, k_cache, v_cache, slot_mapping, k_scales, v_scales,
        q_heads, kv_heads, dim, v_dim, rotary_dim, k_cache.shape[1],
        *q.stride(), *k.stride(), *v.stride(), *cos_strides, *k_cache.stride(), *v_cache.stride(),
        HAS_ROTARY=has_rotary, BLOCK_H=block_h, BLOCK_D=block_d, UNFUSED=has_nvidia_intrinsics(q),
        QUANTIZE=quantize, WRITE_V=write_v, num_warps=4, **pdl_launch(q))
    return q_out


rotary_write_kv.supports_fp8_kv_cache = True
rotary_write_kv.reads_slot_major_values = True  # all four of the value cache's strides are passed
