"""Per-sequence KV state: which blocks a sequence holds and how many of its tokens are cached."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Optional

from mii_core.kv_cache.allocator import BlockAllocator
from mii_core.kv_cache.prefix_cache import PrefixCache


class SchedulingResult(Enum):
    """FastGen's answers to 'can these run?'."""

    Success = 0
    EngineSequenceLimitExceeded = 1
    BatchSequenceLimitExceeded = 2
    BatchTokenLimitExceeded = 3
    KVCacheLimitExceeded = 4
    SequenceTokenLimitExceeded = 5


@dataclass(slots=True)
class SequenceKV:
    blocks: list[int] = field(default_factory=list)
    seen_tokens: int = 0
    tokens: list[int] = field(default_factory=list)  # cached tokens, kept only for prefix caching
    block_keys: list[int] = field(default_factory=list)  # prefix-cache key of each full block


class StateManager:
    def __init__(self, allocator: BlockAllocator, block_size: int, max_tracked: int, max_context: int,
                 prefix_cache: Optional[PrefixCache] = None) -> None:
        self.allocator, self.block_size = allocator, block_size
        self.max_tracked, self.max_context = max_tracked, max_context
        self.sequences: dict[int, SequenceKV] = {}
        self.prefix_cache = prefix_cache

    def get(self, uid: int) -> SequenceKV:
        return self.sequences.get(uid) or SequenceKV()

    def blocks_needed(self, uid: int, new_tokens: int) -> int:
        state = self.get(uid)
        total = state.seen_tokens + new_tokens
        return max(-(-total // self.block_size) - len(state.blocks), 0)

    def tokens_fitting(self, uid: int, free_blocks: int) -> int:
        """How many new tokens ``uid`` can take using its spare slots plus ``free_blocks`` more blocks."""
        state = self.get(uid)
        return (len(state.blocks) + free_blocks) * self.block_size - state.seen_tokens

    def reserve(self, uid: int, new_tokens: int) -> SequenceKV:
        """Tracks ``uid`` (new or known) and allocates the blocks its next ``new_tokens`` need."""
        state = self.sequences.get(uid)
        if state is None:
            if len(self.sequences) >= self.max_tracked:
                raise RuntimeError(f"more than max_tracked_sequences={self.max_tracked} sequences in flight")
            state = self.sequences[uid] = SequenceKV()
        if state.seen_tokens + new_tokens > self.max_context:
            raise ValueError(f"sequence {uid} would hold {state.seen_tokens + new_tokens} tokens, "
                             f"more than max_context={self.max_context}")
        state.blocks.extend(self.allocator.allocate(self.blocks_needed(uid, new_tokens)))
        return state

    def adopt_prefix(self, uid: int, tokens: list[int]) -> int:
        """Starts tracking ``uid`` on the cached blocks that hold a prefix of ``tokens``; returns how many
        tokens are already cached (0 without a prefix cache or a hit)."""
        if self.prefix_cache is None or uid in self.sequences:
            return 0
        blocks, keys = self.prefix_cache.match(tokens)
        if not blocks:
            return 0
        cached = len(blocks) * self.block_size
        self.sequences[uid] = SequenceKV(blocks, cached, list(tokens[:cached]), keys)
        return cached

    def commit(self, uid: int, tokens: list[int]) -> None:
        """Marks ``tokens`` as written to the cache; blocks they fill join the prefix cache."""
        state = self.sequences[uid]
        state.seen_tokens += len(tokens)
        if self.prefix_cache is None:
            return
        state.tokens.extend(tokens)
        size = self.block_size
        for index in range(len(state.block_keys), len(state.tokens) // size):
            parent = state.block_keys[-1] if state.block_keys else None
            chunk = tuple(state.tokens[index * size:(index + 1) * size])
            state.block_keys.append(self.prefix_cache.register(state.blocks[index], parent, chunk))

    def flush(self, uid: int) -> None:
        state = self.sequences.pop(uid, None)
        if state is not None:
            self.allocator.free(state.blocks)
