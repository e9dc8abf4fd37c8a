"""Per-tensor e4m3 quantization of the activations of the FP8 GEMM path (mode "fp8", steps of many tokens).

As ``torch_ref``'s reference (quant_formats.fake_quantize_e4m3): scale = absmax / 448 (1 for all zeros),
codes = e4m3(x / scale) saturated at ±448. The absmax is one pass (``torch.linalg.vector_norm`` with
``ord=inf`` reads x once, where ``x.abs().amax()`` writes a copy first); the codes are one kernel that reads x
and writes a byte per element, where the torch ops (a float32 copy, the division, the clamp, the cast) made
five passes in float32 over a [T, K] activation. The division rounds to nearest (``div_rn``: Triton's plain
``/`` may be approximate on a GPU), and the byte is :func:`e4m3.e4m3_byte`'s, as the reference's cast.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from mii_core.model.quant_formats import FP8_MAX
from mii_kernels.triton.e4m3 import e4m3_byte, has_nvidia_intrinsics

_BLOCK = 1024


@triton.jit
def _quantize_kernel(x_ptr, codes_ptr, scale_ptr, columns, stride_row, BLOCK: tl.constexpr,
                     NVIDIA: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < columns
    x = tl.load(x_ptr + row.to(tl.int64) * stride_row + cols, mask=mask, other=0.0).to(tl.float32)
    scale = tl.load(scale_ptr)
    if NVIDIA:
        scaled = libdevice.div_rn(x, scale)
    else:
        scaled = x / scale
    scaled = tl.minimum(tl.maximum(scaled, -448.0), 448.0)
    tl.store(codes_ptr + row.to(tl.int64) * columns + cols, e4m3_byte(scaled), mask=mask)


def quantize_per_tensor(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(float8_e4m3fn codes [T, K], float32 [] scale) of ``rows`` [T, K] (rows may be strided, columns not)."""
    if rows.stride(-1) != 1:
        rows = rows.contiguous()
    amax = torch.linalg.vector_norm(rows, float("inf")).float()
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    codes = torch.empty(rows.shape, dtype=torch.uint8, device=rows.device)
    if rows.numel():
        grid = (rows.shape[0], triton.cdiv(rows.shape[1], _BLOCK))
        _quantize_kernel[grid](rows, codes, scale, rows.shape[1], rows.stride(0), BLOCK=_BLOCK,
                               NVIDIA=has_nvidia_intrinsics(rows))
    return codes.view(torch.float8_e4m3fn), scale
