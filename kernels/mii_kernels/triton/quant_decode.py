"""Decoding quantized weight codes in registers, shared by the quantized linear and expert kernels.

A code becomes a float16 by placing its bits in a float16's (no table, no branch), which gives the
value divided by a power of two: e4m3 ``s eeee mmm`` → float16 ``s 0eeee mmm0000000`` is value·2^-8
(exponent bias 15 instead of 7; subnormals map onto float16 subnormals alike); e3m2 ``s eee mm`` →
``s 00eee mm00000000`` is value·2^-12 (bias 15 instead of 3). The factor is folded into the row scale,
applied to the float32 accumulator after the dot. Every decoded value has at most 4 significant bits
and lies in [2^-17, 1.75], so casting it to bfloat16 is exact too.

FP6 rows are a little-endian bit stream (four 6-bit codes per three bytes, mii_core.model.quant_formats):
code k sits at bit 6k, in byte 6k // 8 and, when its shift is above 2, the next byte.
"""
import triton
import triton.language as tl

FORMAT_E4M3, FORMAT_E3M2 = 1, 2
DECODED_FACTOR = {FORMAT_E4M3: 2.0 ** 8, FORMAT_E3M2: 2.0 ** 12}  # true value = decoded · factor


def weight_format(mode: str) -> int:
    return FORMAT_E3M2 if mode == "wf6af16" else FORMAT_E4M3


@triton.jit
def load_decoded(row_ptrs, k, mask, FORMAT: tl.constexpr):
    """float16 tile of value·2^-8 (e4m3) or value·2^-12 (e3m2): ``row_ptrs`` the uint8 start of each
    tile element's row, ``k`` its code index in the row (both broadcast to the tile), ``mask`` in bounds."""
    if FORMAT == 1:
        code = tl.load(row_ptrs + k, mask=mask, other=0).to(tl.int32)
        bits = ((code & 0x80) << 8) | ((code & 0x7F) << 7)
    else:
        bit = k * 6
        shift = bit & 7
        low = tl.load(row_ptrs + (bit >> 3), mask=mask, other=0).to(tl.int32)
        high = tl.load(row_ptrs + (bit >> 3) + 1, mask=mask & (shift > 2), other=0).to(tl.int32)
        code = ((low | (high << 8)) >> shift) & 0x3F
        bits = ((code & 0x20) << 10) | ((code & 0x1F) << 8)
    return bits.to(tl.uint16).to(tl.float16, bitcast=True)
