"""Per-tensor e4m3 quantization of the activations of the FP8 GEMM path (mode "fp8", steps of many tokens).

As ``torch_ref``'s reference (quant_formats.fake_quantize_e4m3): scale = absmax / 448 (1 for all zeros),
codes = e4m3(x / scale) saturated at ±448. Three launches whatever the shape: a zeroed float32 absmax, a
kernel whose programs each take the largest |x| of their rows in one column block and join it with one atomic max, and the
codes' kernel, which derives the scale from that absmax itself (one of its programs stores it for the GEMM).
The H200 profile of 2026-12-03 found the torch ops this replaces (a vector-norm reduction, then the where,
the division and a cast, each a launch) at 1.7 ms of a 16.3 ms decode step of 256 sequences: 128 linears,
each a few microseconds of launches on a 2 MB activation. The codes are e4m3(x · (1/scale)), as the KV
cache's write: one reciprocal per step, rounded to nearest (``div_rn``: Triton's plain ``/`` may be
approximate on a GPU), then a product per value rather than a division; the byte is
:func:`e4m3.e4m3_code`'s (the hardware's conversion on sm_89+), as the reference's cast.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from mii_core.model.quant_formats import FP8_MAX
from mii_kernels.triton.amax import join_max
from mii_kernels.triton.e4m3 import converts_to_e4m3, e4m3_code, has_nvidia_intrinsics
from mii_kernels.triton.pdl import pdl_launch, pdl_wait

_BLOCK = 1024
_FP8_MAX = tl.constexpr(FP8_MAX)  # a global a kernel reads must be a constexpr
# The absmax kernel's tiles and programs: a program takes one column block of _BLOCK and a turn of _AMAX_ROWS rows
# at a time, with up to _AMAX_PROGRAMS programs in all (one atomic each). With one row of 1,024 a turn and 264
# programs the kernel read W3's activations at half the bandwidth (7.8 ms of a 129 ms prefill step,
# profile_steps.py, 2026-12-03); four rows a turn and 528 programs over whole rows still ran at 24% occupancy,
# stalled on its loads (Nsight Compute on the H200, 2026-12-03: 2.8 TB/s at 8,192 x 4,096; at W1's 256 rows 64
# programs took 6.8 µs for 2 MB). Column blocks as a second grid axis give every shape enough programs.
_AMAX_ROWS, _AMAX_PROGRAMS = 4, 4224


@triton.jit
def _divide(x, y, NVIDIA: tl.constexpr):
    if NVIDIA:
        return libdevice.div_rn(x, y)
    return x / y


@triton.jit(do_not_specialize=["rows"])  # a step's token count: one compiled kernel for all
def _amax_kernel(x_ptr, amax_ptr, rows, columns, stride_row, ROWS: tl.constexpr, BLOCK: tl.constexpr,
                 PDL: tl.constexpr):
    """The largest |x| of column block program_id(1) over the ROWS-row groups program_id(0), program_id(0) +
    num_programs(0), ... joined into amax_ptr (zeroed) by atomic max (exact: a maximum does not depend on the
    order its operands arrive in)."""
    pdl_wait(PDL)
    largest = tl.zeros([ROWS, BLOCK], dtype=tl.float32)
    step = tl.num_programs(0) * ROWS
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    for first in range(tl.program_id(0) * ROWS, rows, step):
        # past the last row: the last row again, harmless to a maximum
        row = tl.minimum(first + tl.arange(0, ROWS), rows - 1).to(tl.int64)
        x = tl.load(x_ptr + row[:, None] * stride_row + cols[None, :], mask=(cols < columns)[None, :], other=0.0)
        largest = tl.maximum(largest, tl.abs(x.to(tl.float32)))
    join_max(amax_ptr, tl.max(tl.max(largest, axis=1), axis=0))


@triton.jit
def _quantize_kernel(x_ptr, codes_ptr, amax_ptr, scale_ptr, columns, stride_row, BLOCK: tl.constexpr,
                     NVIDIA: tl.constexpr, NATIVE_E4M3: tl.constexpr, PDL: tl.constexpr):
    pdl_wait(PDL)
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < columns
    x = tl.load(x_ptr + row.to(tl.int64) * stride_row + cols, mask=mask, other=0.0).to(tl.float32)
    amax = tl.load(amax_ptr)
    scale = tl.where(amax > 0, _divide(amax, _FP8_MAX, NVIDIA), 1.0)
    if (row == 0) & (tl.program_id(1) == 0):
        tl.store(scale_ptr, scale)
    scaled = tl.minimum(tl.maximum(x * _divide(1.0, scale, NVIDIA), -448.0), 448.0)
    tl.store(codes_ptr + row.to(tl.int64) * columns + cols, e4m3_code(scaled, NATIVE_E4M3), mask=mask)


def quantize_per_tensor(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(float8_e4m3fn codes [T, K], float32 [] scale) of ``rows`` [T, K] (rows may be strided, columns not)."""
    if rows.stride(-1) != 1:
        rows = rows.contiguous()
    codes = torch.empty(rows.shape, dtype=torch.uint8, device=rows.device)
    if not rows.numel():
        return codes.view(torch.float8_e4m3fn), torch.ones((), dtype=torch.float32, device=rows.device)
    amax = torch.zeros((), dtype=torch.float32, device=rows.device)
    column_blocks = triton.cdiv(rows.shape[1], _BLOCK)
    row_programs = min(triton.cdiv(rows.shape[0], _AMAX_ROWS), max(1, _AMAX_PROGRAMS // column_blocks))
    _amax_kernel[(row_programs, column_blocks)](rows, amax, rows.shape[0], rows.shape[1], rows.stride(0),
                                                ROWS=_AMAX_ROWS, BLOCK=_BLOCK, **pdl_launch(rows))
    return _codes(rows, amax, codes)


def quantize_with_amax(rows: torch.Tensor, amax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """As ``quantize_per_tensor`` with the largest |x| already known (float32 [], on rows' device): a kernel
    that produced ``rows`` joined it as it wrote them (the FP8 experts' gate/up kernel does)."""
    if rows.stride(-1) != 1:
        rows = rows.contiguous()
    return _codes(rows, amax, torch.empty(rows.shape, dtype=torch.uint8, device=rows.device))


def _codes(rows: torch.Tensor, amax: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale = torch.empty((), dtype=torch.float32, device=rows.device)
    if rows.numel():
        grid = (rows.shape[0], triton.cdiv(rows.shape[1], _BLOCK))
        _quantize_kernel[grid](rows, codes, amax, scale, rows.shape[1], rows.stride(0), BLOCK=_BLOCK,
                               NVIDIA=has_nvidia_intrinsics(rows), NATIVE_E4M3=converts_to_e4m3(rows),
                               **pdl_launch(rows))
    else:
        scale.fill_(1.0)
    return codes.view(torch.float8_e4m3fn), scale
