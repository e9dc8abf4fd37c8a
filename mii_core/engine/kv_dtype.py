"""``inference_engine_config.kv_cache_dtype`` applied to a built model: the cache's dtype, the kernels'
say-so, and each attention layer's FP8 scales (chosen in ``mii_core/kv_cache/fp8.py``)."""
from __future__ import annotations

import dataclasses

import torch

from mii_core.kv_cache import KVCacheShape
from mii_core.kv_cache.fp8 import is_fp8, kv_cache_dtype, kv_scales
from mii_core.model.attention import HoldsKVScales
from mii_core.model.ops import KernelSet

OPTION = "inference_engine_config.kv_cache_dtype"
FP8_OPS = ("rotary_write_kv", "paged_attention")


def prepare_kv_cache_dtype(option: str, model: torch.nn.Module, model_dtype: torch.dtype, kernels: KernelSet,
                           device: torch.device) -> torch.dtype:
    """The KV cache's dtype for ``option``; for FP8, checks the kernels and gives every attention layer
    of ``model`` its scales (before the cache is made or a graph captured)."""
    dtype = kv_cache_dtype(option, model_dtype)
    if is_fp8(dtype):
        check_kernels_store_fp8(option, kernels, device)
        give_attention_scales(option, model, device)
    return dtype


def check_kernels_store_fp8(option: str, kernels: KernelSet, device: torch.device) -> None:
    """A kernel that does not declare ``supports_fp8_kv_cache`` is refused by name, never run on FP8 bytes."""
    for op in FP8_OPS:
        if not kernels.supports_fp8_kv_cache(op):
            chosen = kernels.choices[op]
            raise ValueError(f"{OPTION}={option!r} needs FP8 K/V in op '{op}', but the kernel serving it on "
                             f"{device.type}, '{chosen.name}' of plugin '{chosen.plugin}', does not store or read "
                             f"an FP8 KV cache; use {OPTION}='auto', or a kernel package that declares "
                             f"supports_fp8_kv_cache")


def give_attention_scales(option: str, model: torch.nn.Module, device: torch.device) -> None:
    layers = [module for module in model.modules() if isinstance(module, HoldsKVScales)]
    if not layers:
        raise ValueError(f"{OPTION}={option!r}: no attention layer of this model takes FP8 scales (none "
                         f"implements mii_core.model.attention.HoldsKVScales); use {OPTION}='auto'")
    for layer in layers:
        layer.use_kv_scales(kv_scales(layer.local_kv_heads, device))


def with_value_layout(shape: KVCacheShape, kernels: KernelSet) -> KVCacheShape:
    """``shape`` with an FP8 cache's values stored along each block's slots where it has a value plane and the
    kernels both write and read that layout: a tile of e4m3 values then reaches the attention's product
    through shared memory once, as a key tile does, not twice (sm_90's IR of the Triton decode kernel,
    2026-12-03: 42 KB of shared memory a program against 75)."""
    if is_fp8(shape.dtype) and shape.planes == 2 and kernels.reads_slot_major_values():
        return dataclasses.replace(shape, slot_major_values=True)
    return shape
