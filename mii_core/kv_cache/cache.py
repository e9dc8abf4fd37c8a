"""The KV cache tensors: one allocation [layers, planes, blocks, block_size, kv_heads, features].

A slot holds ``num_kv_heads`` keys of ``head_dim`` features and values of ``value_dim`` features, in one of
three layouts (the family's :class:`~mii_core.model.spec.DecoderSpec` chooses):

* values as wide as keys: two planes, K and V, of ``head_dim`` features (every multi-head, grouped-query
  and multi-query family);
* values of another width: one plane of ``head_dim + value_dim`` features, [key | value], so neither is
  padded to the other's width;
* ``value_in_key``: one plane of keys only; a value is a view of its key's first ``value_dim`` features
  (a family whose one compressed vector per token serves as both).

Whatever the layout, :meth:`KVCache.layer` gives (keys [blocks, block_size, kv_heads, head_dim], values
[blocks, block_size, kv_heads, value_dim]), unit stride along the features, as the kernel ops take them;
with ``slot_major_values`` (two planes; the engine asks for it for an FP8 cache where the kernels read it)
the value plane is stored [blocks, kv_heads, value_dim, block_size] behind that same view, unit stride along
a block's slots: a tile of values then lies as a matrix product over the keys wants it, as a key tile does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from mii_core.config.engine import KVCacheMemoryConfig


def default_block_size(head_dim: int) -> int:
    """FastGen's choice: 64-token blocks for head size 128, 128-token blocks for head size <= 64."""
    return 128 if head_dim <= 64 else 64


@dataclass(frozen=True, slots=True)
class KVCacheShape:
    num_layers: int
    num_kv_heads: int  # on this rank
    head_dim: int  # a key's features
    block_size: int
    dtype: torch.dtype
    value_head_dim: Optional[int] = None  # a value's features; None: head_dim
    value_in_key: bool = False  # a value is its key's first value_dim features: only keys are stored
    slot_major_values: bool = False  # the value plane stored along each block's slots (two planes only)

    def __post_init__(self) -> None:
        if self.value_in_key and self.value_dim > self.head_dim:
            raise ValueError(f"a value read from its key's first {self.value_dim} features needs keys at least "
                             f"that wide, not {self.head_dim}")
        if self.slot_major_values and self.planes != 2:
            raise ValueError("values stored along a block's slots need a value plane of their own (values as "
                             "wide as keys, not read from them)")

    @property
    def value_dim(self) -> int:
        return self.value_head_dim if self.value_head_dim is not None else self.head_dim

    @property
    def planes(self) -> int:
        """Separate K and V planes (2), or one plane holding both (1)."""
        return 2 if self.value_dim == self.head_dim and not self.value_in_key else 1

    @property
    def plane_features(self) -> int:
        if self.planes == 2 or self.value_in_key:
            return self.head_dim
        return self.head_dim + self.value_dim

    @property
    def bytes_per_token(self) -> int:
        """Bytes one token takes in the cache over every layer and local KV head."""
        element = torch.tensor([], dtype=self.dtype).element_size()
        return self.num_layers * self.planes * self.num_kv_heads * self.plane_features * element

    @property
    def bytes_per_block(self) -> int:
        return self.block_size * self.bytes_per_token


def values_along_slots(values: torch.Tensor) -> bool:
    """Whether a value cache view [blocks, block_size, kv_heads, features] is stored along each block's slots
    (``slot_major_values``) rather than along the features: what a kernel reading it must look at."""
    return values.stride(1) == 1 and values.stride(-1) != 1


def blocks_for_budget(shape: KVCacheShape, memory: KVCacheMemoryConfig, device: torch.device) -> int:
    """Number of blocks the memory config allows on ``device`` (weights must already be loaded)."""
    if memory.mode == "allocate":
        return int(memory.size)
    if device.type != "cuda":
        return memory.cpu_budget_bytes // shape.bytes_per_block
    torch.cuda.empty_cache()
    free, _total = torch.cuda.mem_get_info(device)
    budget = free * memory.gpu_fraction if memory.mode == "fraction" else free - (memory.size or 1e9)
    return max(int(budget) // shape.bytes_per_block, 0)


class KVCache:
    def __init__(self, shape: KVCacheShape, num_blocks: int, device: torch.device) -> None:
        self.shape, self.num_blocks = shape, num_blocks
        self.scratch_block = num_blocks  # one extra block no sequence owns: padded rows of a graph write here
        # zeros, not empty: attention gives masked slots probability 0, and 0 × a NaN or Inf left in
        # never-written memory is NaN; every slot must hold a finite value from the start
        self.data = torch.zeros(shape.num_layers, shape.planes, num_blocks + 1, shape.block_size, shape.num_kv_heads,
                                shape.plane_features, dtype=shape.dtype, device=device)

    def layer(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(keys, values) of layer ``index``: views of the one allocation."""
        shape, planes = self.shape, self.data[index]
        if shape.planes == 2 and shape.slot_major_values:
            blocks, block_size, heads, features = planes[1].shape
            return planes[0], planes[1].view(blocks, heads, features, block_size).permute(0, 3, 1, 2)
        if shape.planes == 2:
            return planes[0], planes[1]
        keys = planes[0][..., :shape.head_dim]
        if shape.value_in_key:
            return keys, planes[0][..., :shape.value_dim]
        return keys, planes[0][..., shape.head_dim:]

    def layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [self.layer(i) for i in range(self.shape.num_layers)]
