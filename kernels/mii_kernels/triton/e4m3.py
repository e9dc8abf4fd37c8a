"""float32 → float8_e4m3fn bytes, shared by the kernels that write FP8 (the KV cache's rotary write, the
activations of the FP8 GEMM path), rounded as PyTorch's cast rounds, to nearest-even. Compiled for sm_89+
(Ada, Hopper) the hardware converts (``cvt.rn.satfinite.e4m3x2.f32``, two values an instruction); elsewhere,
the interpreter included, integer arithmetic does (:func:`e4m3_byte`, about twenty operations a value): the
interpreter's own float8 cast mis-rounds about 2.5% of values.
"""
import torch
import triton
import triton.language as tl

from mii_kernels.triton.hardware import E4M3_CAPABILITY, capability


def has_nvidia_intrinsics(x: torch.Tensor) -> bool:
    """libdevice's round-to-nearest intrinsics: compiled for an NVIDIA GPU, not under the interpreter."""
    return x.is_cuda and torch.version.hip is None


def converts_to_e4m3(x: torch.Tensor) -> bool:
    """Compiled for an NVIDIA GPU of compute capability 8.9 or newer, which converts float32 to e4m3 itself."""
    return has_nvidia_intrinsics(x) and capability(x.device) >= E4M3_CAPABILITY


@triton.jit
def e4m3_code(y, NATIVE: tl.constexpr):
    """The float8_e4m3fn byte of float32 ``y`` (finite, |y| <= 448), rounded to nearest-even: by the hardware
    with ``NATIVE`` (sm_89+ only), else by :func:`e4m3_byte`."""
    if NATIVE:
        code = y.to(tl.float8e4nv, fp_downcast_rounding="rtne").to(tl.uint8, bitcast=True)
    else:
        code = e4m3_byte(y)
    return code


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
