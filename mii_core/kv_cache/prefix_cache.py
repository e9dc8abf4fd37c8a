"""Automatic prefix caching: full KV blocks keyed by a chained hash of their tokens.

A block's key hashes its tokens together with the key of the block before it, so equal keys mean an
equal whole prefix. The first block's parent is a root key: None, or what else the K/V depend on (a
rope's prompt-length variant), so blocks written under another rotation never match. On a hit the
stored tokens are compared as well, so a hash collision is a miss and can never return another
prompt's K/V. Cached blocks are shared through the allocator's reference counts; a cached block
nobody holds stays in the free list, and is forgotten only when it is handed out again (least
recently freed first).
"""
from __future__ import annotations

from typing import Optional, Sequence

from mii_core.kv_cache.allocator import BlockAllocator


class PrefixCache:
    def __init__(self, allocator: BlockAllocator, block_size: int) -> None:
        self.allocator, self.block_size = allocator, block_size
        self._block_of: dict[int, int] = {}                  # key -> block
        self._entry: dict[int, tuple[int, tuple[int, ...]]] = {}  # block -> (key, its tokens)
        self.hit_blocks = 0  # blocks reused so far (observable: tests and metrics)
        allocator.on_reuse = self._forget

    @staticmethod
    def key(parent: Optional[int], tokens: tuple[int, ...]) -> int:
        return hash((parent, tokens))

    def match(self, tokens: Sequence[int], root: Optional[int] = None) -> tuple[list[int], list[int]]:
        """Takes a share of the cached blocks holding a prefix of ``tokens`` (the chain starting at
        ``root``); returns (blocks, keys). Never the whole of ``tokens``: the last token must run through
        the model to give logits."""
        blocks, keys, parent = [], [], root
        for start in range(0, len(tokens) - 1 - self.block_size + 1, self.block_size):
            chunk = tuple(tokens[start:start + self.block_size])
            key = self.key(parent, chunk)
            block = self._block_of.get(key)
            if block is None or self._entry[block][1] != chunk:
                break
            blocks.append(block)
            keys.append(key)
            parent = key
        for block in blocks:
            self.allocator.share(block)
        self.hit_blocks += len(blocks)
        return blocks, keys

    def register(self, block: int, parent: Optional[int], tokens: tuple[int, ...]) -> int:
        """Records a block that just became full; returns its key."""
        key = self.key(parent, tokens)
        if key not in self._block_of and block not in self._entry:
            self._block_of[key] = block
            self._entry[block] = (key, tokens)
        return key

    def _forget(self, block: int) -> None:
        entry = self._entry.pop(block, None)
        if entry is not None and self._block_of.get(entry[0]) == block:
            del self._block_of[entry[0]]
