"""What the GPU the kernels compile for can do, asked once per device, and the one float16 saturation the
kernels that multiply in float16 share."""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

# Ada (8.9) and Hopper (9.0) onwards convert between float32/float16 and float8 e4m3 in hardware
E4M3_CAPABILITY = (8, 9)
F16_MAX = tl.constexpr(65504.0)


def capability(device: torch.device) -> tuple[int, int]:
    """The CUDA compute capability of ``device`` (the current one when it names no index)."""
    return _capability(device.index if device.index is not None else torch.cuda.current_device())


@functools.lru_cache(maxsize=None)
def _capability(index: int) -> tuple[int, int]:
    """Asked once per GPU: the checks run in every layer of every step that is not a graph replay."""
    return torch.cuda.get_device_capability(index)


@triton.jit
def saturated_f16(x):
    """float32 ``x`` as float16, saturated at ±65504 (where a plain cast would give infinities)."""
    return tl.clamp(x, -F16_MAX, F16_MAX).to(tl.float16)
