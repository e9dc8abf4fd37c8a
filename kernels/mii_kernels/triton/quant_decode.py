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

FP6 rows are a little-endian bit stream (four 6-bit codes per three bytes, mii_core.model.quant_formats):
code k sits at bit 6k, in byte 6k // 8 and, when its shift is above 2, the next byte.
"""
import functools

import torch
import triton
import triton.language as tl

FORMAT_E4M3, FORMAT_E3M2, FORMAT_E4M3_NATIVE = 1, 2, 3
# true value = decoded · factor
DECODED_FACTOR = {FORMAT_E4M3: 2.0 ** 8, FORMAT_E3M2: 2.0 ** 12, FORMAT_E4M3_NATIVE: 1.0}
NATIVE_E4M3_CAPABILITY = (8, 9)


def weight_format(mode: str, device: torch.device) -> int:
    """How the kernels decode ``mode``'s codes on ``device``."""
    if mode == "wf6af16":
        return FORMAT_E3M2
    return FORMAT_E4M3_NATIVE if _converts_e4m3(device.type, device.index) else FORMAT_E4M3


@functools.lru_cache(maxsize=None)
def _converts_e4m3(device_type: str, index: int | None) -> bool:
    """sm_89+ converts e4m3 in hardware; the CPU (the Triton interpreter) emulates the conversion."""
    if device_type != "cuda":
        return True
    return torch.cuda.get_device_capability(index) >= NATIVE_E4M3_CAPABILITY


@triton.jit
def load_decoded(row_ptrs, k, mask, FORMAT: tl.constexpr):
    """float16 tile of value·2^-8 (e4m3), value (e4m3 converted natively) or value·2^-12 (e3m2): ``row_ptrs``
    the uint8 start of each tile element's row, ``k`` its code index in the row (both broadcast to the tile),
    ``mask`` in bounds."""
    if FORMAT == 3:
        return tl.load(row_ptrs + k, mask=mask, other=0).to(tl.float8e4nv, bitcast=True).to(tl.float16)
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
