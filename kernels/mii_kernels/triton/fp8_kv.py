"""What the Triton kernels ask of an FP8 KV cache before they launch."""
from __future__ import annotations

import torch

from mii_kernels.torch_ref.fp8_kv import check_scales, is_fp8_cache
from mii_kernels.triton.hardware import E4M3_CAPABILITY, capability


def check_fp8_cache(cache: torch.Tensor, kv_scales, device: torch.device, op: str) -> None:
    """The scales an FP8 cache needs (float32 [2, Hkv], contiguous, on ``device``), and a GPU that converts
    float8; a clear error naming what to change otherwise."""
    check_scales(cache, kv_scales, op)
    if kv_scales is None:
        return
    heads = cache.shape[2]
    if (tuple(kv_scales.shape) != (2, heads) or kv_scales.dtype != torch.float32 or kv_scales.device != device
            or not kv_scales.is_contiguous()):
        raise ValueError(f"{op}: kv_scales must be a contiguous float32 [2, {heads}] tensor on {device}; got "
                         f"{kv_scales.dtype} {tuple(kv_scales.shape)} on {kv_scales.device}")
    if device.type == "cuda":
        found = capability(device)
        if found < E4M3_CAPABILITY:
            raise ValueError(f"the Triton {op} kernel reads and writes an FP8 KV cache on GPUs of compute "
                             f"capability 8.9 or newer (Ada, Hopper); {torch.cuda.get_device_name(device)} is "
                             f"{found}: set inference_engine_config.kv_cache_dtype='auto'")


__all__ = ["check_fp8_cache", "is_fp8_cache"]
