"""Hands out KV blocks by index, with reference counts so that sequences can share a cached prefix.

Free blocks are kept oldest-freed first and handed out in that order, so a free block that still holds
a cached prefix survives as long as possible (least recently used goes first). ``on_reuse`` tells the
prefix cache when such a block is handed out for new content.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Optional


class BlockAllocator:
    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        self.ref_counts = [0] * num_blocks
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self.on_reuse: Optional[Callable[[int], None]] = None

    @property
    def num_free(self) -> int:
        return len(self._free)

    def allocate(self, count: int) -> list[int]:
        if count > len(self._free):
            raise RuntimeError(f"asked for {count} KV blocks with {len(self._free)} free (scheduler bug)")
        blocks = [self._free.popitem(last=False)[0] for _ in range(count)]
        for block in blocks:
            self.ref_counts[block] = 1
            if self.on_reuse is not None:
                self.on_reuse(block)
        return blocks

    def share(self, block: int) -> None:
        """One more owner of ``block``; a free block (still holding cached content) is taken back."""
        if self.ref_counts[block] == 0:
            del self._free[block]
        self.ref_counts[block] += 1

    def free(self, blocks: list[int]) -> None:
        for block in blocks:
            assert self.ref_counts[block] > 0, f"double free of KV block {block}"
            self.ref_counts[block] -= 1
            if self.ref_counts[block] == 0:
                self._free[block] = None
