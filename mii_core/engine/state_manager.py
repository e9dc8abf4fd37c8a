"""Per-sequence KV state: which blocks a sequence holds and how many of its tokens are cached.

On a sliding-window model (``window`` set) a sequence gives back the leading blocks no future query can
see, so it holds about ``window`` tokens of blocks however long it grows. Those blocks keep their
entries in the block table (positions still index it); attention masks them, as the op contract says.
With a prefix cache (models without a window) a new sequence adopts the cached blocks of its prompt's
prefix, and every block that fills is offered to the cache.

Each sequence keeps the prompt length it started with (``reserve``): a rope may rotate every token of a
sequence by it (Qwen's dynamic NTK), so it must outlive prompt chunking and preemption. When a rope does, its
``prompt_key`` (mii_core.model.rotary.prompt_cache_key) keys cached blocks by it as well as by tokens.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Callable, Optional

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
    blocks: list[int] = field(default_factory=list)  # block table: entry k holds positions k*bs .. (k+1)*bs - 1
    seen_tokens: int = 0
    released: int = 0  # leading table entries whose blocks went back to the allocator (left the window)
    tokens: list[int] = field(default_factory=list)  # cached tokens, kept only for prefix caching
    block_keys: list[int] = field(default_factory=list)  # prefix-cache key of each full block
    prompt_length: int = 0  # fixed when the sequence starts (0: not yet)

    @property
    def held_blocks(self) -> int:
        return len(self.blocks) - self.released


class StateManager:
    def __init__(self, allocator: BlockAllocator, block_size: int, max_tracked: int, max_context: int,
                 window: Optional[int] = None, prefix_cache: Optional[PrefixCache] = None,
                 prompt_key: Optional[Callable[[int], Optional[int]]] = None) -> None:
        if window is not None and prefix_cache is not None:
            raise ValueError("prefix caching does not combine with a sliding window that frees blocks")
        self.allocator, self.block_size = allocator, block_size
        self.max_tracked, self.max_context = max_tracked, max_context
        self.window = window  # key j is visible from query p when p - j < window; None: every key
        self.sequences: dict[int, SequenceKV] = {}
        self.prefix_cache = prefix_cache
        self.prompt_key = prompt_key  # prompt length -> what keys its blocks besides tokens (None: nothing)

    def get(self, uid: int) -> SequenceKV:
        return self.sequences.get(uid) or SequenceKV()

    def blocks_needed(self, uid: int, new_tokens: int) -> int:
        state = self.get(uid)
        total = state.seen_tokens + new_tokens
        return max(-(-total // self.block_size) - len(state.blocks), 0)

    def most_blocks_held(self, total_tokens: int) -> int:
        """The most blocks a new sequence of ``total_tokens`` holds at once when it is fed a token at a
        time: what it needs to reach that length alone in the cache."""
        blocks = -(-total_tokens // self.block_size)
        if self.window is None:
            return blocks
        # the keys of positions p - window + 1 .. p, plus the block that the next key opens
        return min(blocks, -(-(self.window - 1) // self.block_size) + 1)

    def admission_blocks(self, uid: int, pending_tokens: int) -> int:
        """Free blocks a waiting sequence needs before it is admitted (beyond any it already holds)."""
        if self.window is None:
            return self.blocks_needed(uid, pending_tokens)
        return self.most_blocks_held(pending_tokens)

    def tokens_fitting(self, uid: int, free_blocks: int) -> int:
        """How many new tokens ``uid`` can take using its spare slots plus ``free_blocks`` more blocks."""
        state = self.get(uid)
        return (len(state.blocks) + free_blocks) * self.block_size - state.seen_tokens

    def reserve(self, uid: int, new_tokens: int, prompt_length: Optional[int] = None) -> SequenceKV:
        """Tracks ``uid`` (new or known) and allocates the blocks its next ``new_tokens`` need. A sequence
        without a prompt length yet takes ``prompt_length`` (the scheduler gives it at admission, so it
        holds across chunks and preemptions); it is kept from then on."""
        state = self.sequences.get(uid)
        if state is None:
            if len(self.sequences) >= self.max_tracked:
                raise RuntimeError(f"more than max_tracked_sequences={self.max_tracked} sequences in flight")
            state = self.sequences[uid] = SequenceKV()
        if state.seen_tokens + new_tokens > self.max_context:
            raise ValueError(f"sequence {uid} would hold {state.seen_tokens + new_tokens} tokens, "
                             f"more than max_context={self.max_context}")
        state.blocks.extend(self.allocator.allocate(self.blocks_needed(uid, new_tokens)))
        if not state.prompt_length and prompt_length:
            state.prompt_length = prompt_length
        return state

    def adopt_prefix(self, uid: int, tokens: list[int], prompt_length: Optional[int] = None) -> int:
        """Starts tracking ``uid`` on the cached blocks that hold a prefix of ``tokens`` (of a sequence whose
        prompt is ``prompt_length`` long, default all of ``tokens``); returns how many tokens are already
        cached (0 without a prefix cache or a hit)."""
        if self.prefix_cache is None or uid in self.sequences:
            return 0
        prompt_length = prompt_length or len(tokens)
        blocks, keys = self.prefix_cache.match(tokens, self._root_key(prompt_length))
        if not blocks:
            return 0
        cached = len(blocks) * self.block_size
        self.sequences[uid] = SequenceKV(blocks, cached, tokens=list(tokens[:cached]), block_keys=keys,
                                         prompt_length=prompt_length)
        return cached

    def _root_key(self, prompt_length: int) -> Optional[int]:
        variant = self.prompt_key(prompt_length) if self.prompt_key is not None else None
        return None if variant is None else hash(("prompt variant", variant))

    def commit(self, uid: int, tokens: list[int]) -> None:
        """Counts ``tokens`` as cached (after the forward pass wrote them): blocks they fill join the
        prefix cache; under a window, leading blocks no later query sees go back to the allocator."""
        state = self.sequences[uid]
        state.seen_tokens += len(tokens)
        if self.prefix_cache is not None:
            self._register_full_blocks(state, tokens)
        if self.window is not None:
            self._release_behind_window(state)

    def _register_full_blocks(self, state: SequenceKV, tokens: list[int]) -> None:
        state.tokens.extend(tokens)
        size = self.block_size
        for index in range(len(state.block_keys), len(state.tokens) // size):
            parent = state.block_keys[-1] if state.block_keys else self._root_key(state.prompt_length)
            chunk = tuple(state.tokens[index * size:(index + 1) * size])
            state.block_keys.append(self.prefix_cache.register(state.blocks[index], parent, chunk))

    def _release_behind_window(self, state: SequenceKV) -> None:
        # later queries sit at positions >= seen_tokens and see keys j > position - window
        first_visible = max(state.seen_tokens - self.window + 1, 0)
        outside = first_visible // self.block_size
        if outside > state.released:
            self.allocator.free(state.blocks[state.released:outside])
            state.released = outside

    def flush(self, uid: int) -> None:
        state = self.sequences.pop(uid, None)
        if state is not None:
            self.allocator.free(state.blocks[state.released:])
