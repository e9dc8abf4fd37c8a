"""The KV cache tensors: one allocation [layers, 2, blocks, block_size, kv_heads, head_dim]."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from mii_core.config.engine import KVCacheMemoryConfig


def default_block_size(head_dim: int) -> int:
    """FastGen's choice: 64-token blocks for head size 128, 128-token blocks for head size <= 64."""
    return 128 if head_dim <= 64 else 64


@dataclass(frozen=True, slots=True)
class KVCacheShape:
    num_layers: int
    num_kv_heads: int  # on this rank
    head_dim: int
    block_size: int
    dtype: torch.dtype

    @property
    def bytes_per_block(self) -> int:
        element = torch.tensor([], dtype=self.dtype).element_size()
        return 2 * self.num_layers * self.block_size * self.num_kv_heads * self.head_dim * element


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
        self.data = torch.zeros(shape.num_layers, 2, num_blocks + 1, shape.block_size, shape.num_kv_heads,
                                shape.head_dim, dtype=shape.dtype, device=device)

    def layer(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.data[index, 0], self.data[index, 1]

    def layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [self.layer(i) for i in range(self.shape.num_layers)]
