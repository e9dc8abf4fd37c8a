"""The FP8 KV cache: what ``kv_cache_dtype`` means, and the one place its scales are chosen.

K and V are stored as ``x / scale`` rounded to float8 e4m3 (saturated at ±448) and read back as
``stored · scale``; the scales are static, one per (K or V, KV head) of each layer: a float32 tensor
[2, Hkv] that each attention layer keeps in its ``AttentionParams.kv_scales`` (``mii_core/model/ops.py``).

Why static per-head scales of 1.0 (vLLM's default without calibration): e4m3 keeps 3 mantissa bits at
every magnitude from 2^-6 to 448, so a scale changes only the range, never the relative precision, and
the K and V of the models we serve sit well inside that range. A static scale costs nothing at run time
and no memory: the cache holds exactly half the bytes of a 16-bit one. A dynamic scale per (token, KV head)
written beside the cache would survive outliers beyond 448 at ~3% more memory and a max-reduction in the
write kernel; calibrated per-head scales (shipped by compressed-tensors checkpoints as ``k_scale`` /
``v_scale``) would fill these same tensors. :func:`kv_scales` is the one function to change to measure
another static choice.
"""
from __future__ import annotations

import torch

FP8_KV_DTYPE = torch.float8_e4m3fn
FP8_E4M3_MAX = 448.0
# the values of inference_engine_config.kv_cache_dtype that mean float8 e4m3 ("fp8_e4m3": vLLM's spelling)
FP8_NAMES = ("fp8", "fp8_e4m3")


def kv_cache_dtype(option: str, model_dtype: torch.dtype) -> torch.dtype:
    """The torch dtype of the cache for ``inference_engine_config.kv_cache_dtype`` = ``option``."""
    if option == "auto":
        return model_dtype
    if option in FP8_NAMES:
        return FP8_KV_DTYPE
    raise ValueError(f"inference_engine_config.kv_cache_dtype={option!r} is not one of 'auto', "
                     f"{', '.join(repr(n) for n in FP8_NAMES)}")


def is_fp8(dtype: torch.dtype) -> bool:
    return dtype == FP8_KV_DTYPE


def kv_scales(num_kv_heads: int, device: torch.device) -> torch.Tensor:
    """One layer's scales, float32 [2, num_kv_heads]: row 0 divides K, row 1 divides V, per KV head."""
    return torch.ones(2, num_kv_heads, dtype=torch.float32, device=device)
