"""Decoding quantized weight codes in registers, shared by the quantized linear and expert kernels.

A code becomes a float16 by placing its bits in a float16's (no table, no branch), which gives the
value divided by a power of two: e4m3 ``s eeee mmm`` → float16 ``s 0eeee mmm0000000`` is value·2^-8
(exponent bias 15 instead of 7; subnormals map onto float16 subnormals alike); e3m2 ``s eee mm`` →
``s 00eee mm00000000`` is value·2^-12 (bias 15 instead of 3). The factor is folded into the row scale,
applied to the float32 accumulator after the dot. Every decoded value has at most 4 significant bits
and lies in [2^-17, 1.75], so casting it to bfloat16 is exact too.

On sm_89+ (Ada, Hopper) e4m3 codes are converted by the hardware instead (``FORMAT_E4M3_NATIVE``: the
byte bitcast to Triton's float8e4nv, then to float16, exact): the bit placement costs about six integer
operations per weight, and at batch 1 that, not the memory, bounded the FP8 GEMV (2.3 TB/s on the H200,
benchmarks/kernel_bench_quant.py). Older GPUs have no e4m3 conversion and keep the bit placement.

FP6 rows are bit planes (mii_core.model.quant_formats): a kernel loads the same contiguous run of bytes from
each of a row's three planes (``fp6_plane_tiles``), which holds four quarters of codes; ``fp6_quarter``
decodes one (its nibble and crumb taken by a shift and a mask each, then the bit placement) and
``fp6_columns`` says which codes, so the kernel multiplies each quarter by the matching activations. No
load of FP6 codes sits at a computed offset, so the loads vectorise (16-byte runs); the speed of this on a GPU
is not measured yet.
"""
import functools

import torch
import triton
import triton.language as tl

from mii_core.model.quant_formats import FP6_BLOCK, FP6_RUN, fp6_plane_bytes
from mii_kernels.triton.hardware import E4M3_CAPABILITY, capability, saturated_f16

FORMAT_E4M3, FORMAT_E3M2, FORMAT_E4M3_NATIVE = 1, 2, 3
# true value = decoded · factor
DECODED_FACTOR = {FORMAT_E4M3: 2.0 ** 8, FORMAT_E3M2: 2.0 ** 12, FORMAT_E4M3_NATIVE: 1.0}
_BLOCK, _RUN = tl.constexpr(FP6_BLOCK), tl.constexpr(FP6_RUN)


def weight_format(mode: str, device: torch.device) -> int:
    """How the kernels decode ``mode``'s codes on ``device``."""
    if mode == "wf6af16":
        return FORMAT_E3M2
    return FORMAT_E4M3_NATIVE if _converts_e4m3(device.type, device.index) else FORMAT_E4M3


def plane_bytes_of(fmt: int, k: int) -> int:
    """The kernels' ``plane_bytes`` argument: one plane of an FP6 row of ``k`` codes, 0 for other formats."""
    return fp6_plane_bytes(k) if fmt == FORMAT_E3M2 else 0


@functools.lru_cache(maxsize=None)
def _converts_e4m3(device_type: str, index: int | None) -> bool:
    """sm_89+ converts e4m3 in hardware; the CPU (the Triton interpreter) emulates the conversion."""
    if device_type != "cuda":
        return True
    return capability(torch.device(device_type, index)) >= E4M3_CAPABILITY


@triton.jit
def load_decoded(row_ptrs, k, mask, FORMAT: tl.constexpr):
    """float16 tile of e4m3 codes: value·2^-8 (FORMAT 1, bit placement) or value (FORMAT 3, converted
    natively). ``row_ptrs``: the uint8 start of each tile element's row, ``k`` its code index in the row (both
    broadcast to the tile), ``mask`` in bounds. FP6 codes are read by ``fp6_plane_tiles``."""
    if FORMAT == 3:
        return tl.load(row_ptrs + k, mask=mask, other=0).to(tl.float8e4nv, bitcast=True).to(tl.float16)
    code = tl.load(row_ptrs + k, mask=mask, other=0).to(tl.int32)
    bits = ((code & 0x80) << 8) | ((code & 0x7F) << 7)
    return bits.to(tl.uint16).to(tl.float16, bitcast=True)


@triton.jit
def dot_operands(x, w):
    """(x, w) as ``tl.dot`` takes them: x the activations, w a tile of decoded codes (float16, exact) or of
    plain weights. bfloat16 activations join decoded codes as float16 (saturated at ±65504; exact below), so
    the products run on float16 tensor cores: converting each decoded code to bfloat16 instead costs sm_90 a
    per-element float16 → bfloat16 conversion (``F2F.BF16.F16``, a quarter-rate instruction: the FP8
    attention's SASS had 256 of them a tile), for a tile whose other rows, the activations', are few.
    Otherwise w takes x's dtype (float32 activations: float32 products)."""
    if x.dtype == tl.bfloat16:
        if w.dtype == tl.float16:
            x = saturated_f16(x.to(tl.float32))
    w = w.to(x.dtype)
    return x, w


@triton.jit
def fp6_plane_tiles(row_ptrs, positions, mask, plane_bytes, EVEN: tl.constexpr):
    """The byte tiles at plane byte ``positions`` of each row (``row_ptrs``: uint8 row starts, broadcast to the
    tile; ``mask``: in bounds, not read if ``EVEN``; ``plane_bytes``: one plane's length) from the three
    planes, as int32: the nibbles of quarters 0|1, those of quarters 2|3, the crumbs."""
    low_pairs, high_pairs, crumbs = fp6_raw_planes(row_ptrs, positions, mask, plane_bytes, EVEN)
    return low_pairs.to(tl.int32), high_pairs.to(tl.int32), crumbs.to(tl.int32)


@triton.jit
def fp6_raw_planes(row_ptrs, positions, mask, plane_bytes, EVEN: tl.constexpr):
    """As :func:`fp6_plane_tiles`, the bytes as loaded (uint8), for :func:`fp6_quarter_asm`."""
    if EVEN:
        low_pairs = tl.load(row_ptrs + positions)
        high_pairs = tl.load(row_ptrs + plane_bytes + positions)
        crumbs = tl.load(row_ptrs + 2 * plane_bytes + positions)
    else:
        low_pairs = tl.load(row_ptrs + positions, mask=mask, other=0)
        high_pairs = tl.load(row_ptrs + plane_bytes + positions, mask=mask, other=0)
        crumbs = tl.load(row_ptrs + 2 * plane_bytes + positions, mask=mask, other=0)
    return low_pairs, high_pairs, crumbs


@triton.jit
def fp6_quarter(low_pairs, high_pairs, crumbs, QUARTER: tl.constexpr):
    """float16 tile of value·2^-12 of quarter ``QUARTER``'s codes from ``fp6_plane_tiles``: nibble ``s eee``
    and crumb ``mm`` placed as float16 ``s 00eee mm00000000``."""
    if QUARTER < 2:
        pairs = low_pairs
    else:
        pairs = high_pairs
    nibble = (pairs >> (4 * (QUARTER % 2))) & 0xF
    crumb = (crumbs >> (2 * QUARTER)) & 0x3
    bits = ((nibble & 0x8) << 12) | ((nibble & 0x7) << 10) | (crumb << 8)
    return bits.to(tl.uint16).to(tl.float16, bitcast=True)


def fp6_quarter_ptx(quarter: int) -> str:
    """PTX decoding quarter ``quarter`` of four FP6 codes at once (``fp6_quarter_asm``): ``$2`` holds four bytes of
    the quarter's nibble plane, ``$3`` four bytes of the crumb plane; ``$0`` and ``$1`` get the codes' float16
    (value·2^-12, as ``fp6_quarter``) two a register. ``prmt`` spreads two bytes into the two 16-bit halves of a
    register, so each shift and mask below places the bits of two codes at once (FP6-LLM's idea, on our planes):
    the nibble's sign to bit 15, its exponent to bits 10-12, the crumb to bits 8-9 of each half."""
    sign_shift, exponent_shift = (12, 10) if quarter % 2 == 0 else (8, 6)  # the low or the high nibble
    lines = ["{", ".reg .b32 nib, crb, sgn, exp, man;"]
    for out, selector in (("$0", "0x4140"), ("$1", "0x4342")):  # bytes 0, 1 (then 2, 3) to the two halves
        lines += [f"prmt.b32 nib, $2, 0, {selector};", f"prmt.b32 crb, $3, 0, {selector};",
                  f"shl.b32 sgn, nib, {sign_shift};", "and.b32 sgn, sgn, 0x80008000;",
                  f"shl.b32 exp, nib, {exponent_shift};", "and.b32 exp, exp, 0x1C001C00;",
                  f"shl.b32 man, crb, {8 - 2 * quarter};", "and.b32 man, man, 0x03000300;",
                  "or.b32 sgn, sgn, exp;", f"or.b32 {out}, sgn, man;"]
    return "\n".join(lines + ["}"])


# a compiled kernel reads only constexpr globals, and indexes no list of them: one name a quarter
_FP6_PTX_0, _FP6_PTX_1, _FP6_PTX_2, _FP6_PTX_3 = (tl.constexpr(fp6_quarter_ptx(quarter)) for quarter in range(4))


@triton.jit
def fp6_quarter_asm(nibbles, crumbs, QUARTER: tl.constexpr):
    """As :func:`fp6_quarter`, from the planes' raw bytes (uint8 tiles: the quarter's nibble plane, the crumb
    plane) by inline PTX, four codes an instance; compiled for an NVIDIA GPU only (the interpreter runs no PTX)."""
    if QUARTER == 0:
        codes = tl.inline_asm_elementwise(_FP6_PTX_0, "=r,=r,r,r", [nibbles, crumbs], dtype=tl.float16,
                                          is_pure=True, pack=4)
    elif QUARTER == 1:
        codes = tl.inline_asm_elementwise(_FP6_PTX_1, "=r,=r,r,r", [nibbles, crumbs], dtype=tl.float16,
                                          is_pure=True, pack=4)
    elif QUARTER == 2:
        codes = tl.inline_asm_elementwise(_FP6_PTX_2, "=r,=r,r,r", [nibbles, crumbs], dtype=tl.float16,
                                          is_pure=True, pack=4)
    else:
        codes = tl.inline_asm_elementwise(_FP6_PTX_3, "=r,=r,r,r", [nibbles, crumbs], dtype=tl.float16,
                                          is_pure=True, pack=4)
    return codes


@triton.jit
def fp6_columns(positions, QUARTER: tl.constexpr):
    """The code index in the row (the activation's column) of quarter ``QUARTER`` at plane byte ``positions``:
    runs of 16 consecutive codes, one run per 64-code block."""
    return (positions // _RUN) * _BLOCK + QUARTER * _RUN + positions % _RUN


@triton.jit
def fp6_dot_chunk(acc, x_rows, stride_xk, x_ok, w_rows, n_ok, start, features_in, plane_bytes,
                  BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """``acc`` [BLOCK_M, BLOCK_N] plus x times the FP6 weights of codes ``start .. start + BLOCK_K`` (a multiple
    of 64) as four ``tl.dot`` of a quarter each: ``x_rows`` [BLOCK_M, 1] the activations' row starts (``x_ok``
    real rows, ``stride_xk`` between columns), ``w_rows`` [1, BLOCK_N] the code rows' starts (``n_ok`` real)."""
    positions = start // 4 + tl.arange(0, BLOCK_K // 4)
    low_pairs, high_pairs, crumbs = fp6_plane_tiles(
        w_rows, positions[:, None], (positions < plane_bytes)[:, None] & n_ok[None, :], plane_bytes, False)
    for quarter in tl.static_range(4):
        cols = fp6_columns(positions, quarter)
        x = tl.load(x_rows + cols[None, :] * stride_xk, mask=x_ok[:, None] & (cols < features_in)[None, :], other=0.0)
        x, w = dot_operands(x, fp6_quarter(low_pairs, high_pairs, crumbs, quarter))
        acc = tl.dot(x, w, acc, input_precision=PRECISION)
    return acc
