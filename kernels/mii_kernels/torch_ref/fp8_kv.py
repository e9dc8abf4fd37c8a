"""The FP8 KV cache's rounding as the ops' contract states it (mii_core/model/ops.py), in PyTorch."""
from __future__ import annotations

import torch

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0


def is_fp8_cache(cache: torch.Tensor) -> bool:
    return cache.dtype == FP8


def quantize(x: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """``x`` [T, Hkv, D] as e4m3 of ``x · (1 / scale)`` per head, saturated at ±448 (``scales`` [Hkv])."""
    inverse = torch.reciprocal(scales.float())[None, :, None]
    return (x.float() * inverse).clamp(-FP8_MAX, FP8_MAX).to(FP8)


def dequantize(stored: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``stored`` [..., Hkv, D] e4m3 back to ``dtype``: float32(stored) · scale of its head, rounded once."""
    return (stored.float() * scales.float()[:, None]).to(dtype)


def check_scales(cache: torch.Tensor, scales, op: str) -> None:
    """An FP8 cache needs its scales; a cache in the model's dtype takes none."""
    if is_fp8_cache(cache) and scales is None:
        raise ValueError(f"{op}: an FP8 KV cache needs kv_scales (float32 [2, Hkv]); none were given")
    if scales is not None and not is_fp8_cache(cache):
        raise ValueError(f"{op}: kv_scales were given for a KV cache of dtype {cache.dtype}; they apply to "
                         f"a float8_e4m3fn cache only")
