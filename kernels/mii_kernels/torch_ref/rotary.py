"""Reference rotary embedding fused with the KV write (an FP8 cache stores K/V rounded as fp8_kv says)."""
import torch

from mii_core.kv_cache import values_along_slots
from mii_kernels.torch_ref import fp8_kv


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rotary_dim: int) -> torch.Tensor:
    rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    half = rotary_dim // 2
    rotated_half = torch.cat((-rot[..., half:], rot[..., :half]), dim=-1)
    out = rot * cos + rotated_half * sin
    return torch.cat((out, rest), dim=-1) if rest.numel() else out


def write_kv(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
             slot_mapping: torch.Tensor, kv_scales=None) -> None:
    """``v`` None: the values are views of the keys (``v_cache`` one of ``k_cache``), written with them."""
    fp8_kv.check_scales(k_cache, kv_scales, "rotary_write_kv")
    if kv_scales is not None:
        k = fp8_kv.quantize(k, kv_scales[0])
        v = fp8_kv.quantize(v, kv_scales[1]) if v is not None else None
    _write(k, k_cache, slot_mapping)
    if v is not None:
        _write(v, v_cache, slot_mapping)


def _write(x: torch.Tensor, cache: torch.Tensor, slot_mapping: torch.Tensor) -> None:
    # index_copy_ has no float8 kernel on CPU: an FP8 cache is written through its bytes
    as_bytes = fp8_kv.is_fp8_cache(cache)
    flat = cache.view(torch.uint8) if as_bytes else cache
    x = x.view(torch.uint8) if as_bytes else x
    if values_along_slots(flat):  # index in place: no flat view of slots exists
        block_size = cache.shape[1]
        flat[slot_mapping // block_size, slot_mapping % block_size] = x
        return
    # view, not reshape: a cache that is a strided view of the allocation ([key | value] planes) must be
    # written in place, never through a copy
    flat.view(-1, *cache.shape[2:]).index_copy_(0, slot_mapping, x)


def rotary_write_kv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos, sin, rotary_dim: int,
                    k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor,
                    kv_scales=None) -> torch.Tensor:
    if rotary_dim:
        cos, sin = cos[:, None, :], sin[:, None, :]  # broadcast over heads
        q, k = _rotate(q, cos, sin, rotary_dim), _rotate(k, cos, sin, rotary_dim)
    write_kv(k, v, k_cache, v_cache, slot_mapping, kv_scales)
    return q


rotary_write_kv.supports_fp8_kv_cache = True
rotary_write_kv.reads_slot_major_values = True
