"""float32 → float8_e4m3fn bytes in integer arithmetic, shared by the kernels that write FP8 (the KV cache's
rotary write, the activations of the FP8 GEMM path). It rounds as PyTorch's cast does, to nearest-even, on the
GPU and under the interpreter alike: the interpreter's own float8 cast mis-rounds about 2.5% of values, and one
path on both keeps the GPU's bytes equal to the reference's."""
import torch
import triton
import triton.language as tl


def has_nvidia_intrinsics(x: torch.Tensor) -> bool:
    """libdevice's round-to-nearest intrinsics: compiled for an NVIDIA GPU, not under the interpreter."""
    return x.is_cuda and torch.version.hip is None


@triton.jit
def e4m3_byte(y):
    """The float8_e4m3fn byte of float32 ``y`` (finite, |y| <= 448), rounded to nearest-even."""
    bits = y.to(tl.int32, bitcast=True)
    sign = (bits >> 31) & 1
    magnitude = bits & 0x7FFFFFFF
    # normal (|y| >= 2^-6): keep exponent and 3 of float32's 23 mantissa bits, ties to even, rebias 127 -> 7
    kept = magnitude >> 20
    rest = magnitude & 0xFFFFF
    up = (rest > 0x80000) | ((rest == 0x80000) & ((kept & 1) == 1))
    normal = kept + up.to(tl.int32) - (120 << 3)
    # subnormal (|y| < 2^-6): a multiple of 2^-9 (the scaling is exact), ties to even
    scaled = tl.abs(y) * 512.0
    whole = tl.floor(scaled)
    fraction = scaled - whole
    units = whole.to(tl.int32)
    subnormal = units + ((fraction > 0.5) | ((fraction == 0.5) & ((units & 1) == 1))).to(tl.int32)
    code = tl.where(tl.abs(y) < 0.015625, subnormal, normal)
    return (code | (sign << 7)).to(tl.uint8)
