"""Hands out KV blocks by index. Reference counts let a future prefix cache share a block."""
from __future__ import annotations

from collections import deque


class BlockAllocator:
    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        self.ref_counts = [0] * num_blocks
        self._free = deque(range(num_blocks))

    @property
    def num_free(self) -> int:
        return len(self._free)

    def allocate(self, count: int) -> list[int]:
        if count > len(self._free):
            raise RuntimeError(f"asked for {count} KV blocks with {len(self._free)} free (scheduler bug)")
        blocks = [self._free.popleft() for _ in range(count)]
        for block in blocks:
            self.ref_counts[block] = 1
        return blocks

    def share(self, block: int) -> None:
        assert self.ref_counts[block] > 0, "sharing a free block"
        self.ref_counts[block] += 1

    def free(self, blocks: list[int]) -> None:
        for block in blocks:
            assert self.ref_counts[block] > 0, f"double free of KV block {block}"
            self.ref_counts[block] -= 1
            if self.ref_counts[block] == 0:
                self._free.append(block)
