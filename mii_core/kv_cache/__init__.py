"""Blocked KV cache: preallocated block tensors, a reference-counted block allocator, sizing."""
from mii_core.kv_cache.allocator import BlockAllocator
from mii_core.kv_cache.cache import KVCache, KVCacheShape, blocks_for_budget, default_block_size, values_along_slots

__all__ = ["BlockAllocator", "KVCache", "KVCacheShape", "blocks_for_budget", "default_block_size",
           "values_along_slots"]
