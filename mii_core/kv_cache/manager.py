"""Per-sequence KV state: which blocks a sequence holds and how many of its tokens are cached.

The scheduler owns one :class:`KVCacheManager` and is the only code that changes it (vLLM's scheduler
owns its KVCacheManager the same way); the model runner only reads the block tables a plan carries.
A sequence's ``cached`` count is the one record of how many of its tokens are in the cache.

On a sliding-window model (``window`` set) a sequence gives back the leading blocks no future query can
see, so it holds about ``window`` tokens of blocks however long it grows. Those blocks keep their
entries in the block table (positions still index it); attention masks them, as the op contract says.
With a prefix cache (models without a window) a new sequence adopts the cached blocks of its prompt's
prefix, and every block that fills is offered to the cache.

Each sequence keeps the prompt length it started with (``reserve``): a model may make every token of a
sequence depend on it (the model's ``prompt_variant`` hook says how), so it must outlive prompt chunking
and preemption; cached blocks are keyed by that variant as well as by their tokens.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Callable, Optional, Sequence

from mii_core.config.engine import StateManagerConfig
from mii_core.kv_cache.allocator import BlockAllocator
from mii_core.kv_cache.prefix_cache import PrefixCache

PromptVariant = Callable[[int], Optional[int]]  # prompt length -> what keys its K/V besides tokens (None: nothing)


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
    cached: int = 0  # tokens whose K/V are in the cache
    released: int = 0  # leading table entries whose blocks went back to the allocator (left the window)
    tokens: list[int] = field(default_factory=list)  # cached tokens, kept only for prefix caching
    block_keys: list[int] = field(default_factory=list)  # prefix-cache key of each full block
    prompt_length: int = 0  # fixed when the sequence starts (0: not yet)

    @property
    def held_blocks(self) -> int:
        return len(self.blocks) - self.released


class KVCacheManager:
    def __init__(self, num_blocks: int, block_size: int, limits: StateManagerConfig,
                 window: Optional[int] = None, prefix_caching: bool = False,
                 prompt_variant: Optional[PromptVariant] = None) -> None:
        """``window``: key j is visible from query p when p - j < window (None: every key); the prefix cache
        is left off under a window, whose sequences free the blocks behind it."""
        self.allocator, self.block_size, self.limits = BlockAllocator(num_blocks), block_size, limits
        self.window = window
        self.prefix_cache = PrefixCache(self.allocator, block_size) if prefix_caching and window is None else None
        self.prompt_variant = prompt_variant
        self.sequences: dict[int, SequenceKV] = {}

    @property
    def num_blocks(self) -> int:
        return self.allocator.num_blocks

    @property
    def free_blocks(self) -> int:
        return self.allocator.num_free

    @property
    def capacity_tokens(self) -> int:
        """The most tokens one sequence can reach with the cache to itself: the cache's size, or, when the
        blocks behind a sliding window are freed and the window fits the cache, no cache limit
        (max_context, which ``reserve`` enforces)."""
        cache_tokens = self.num_blocks * self.block_size
        if self.most_blocks_held(self.limits.max_context) <= self.num_blocks:
            return max(cache_tokens, self.limits.max_context)
        return cache_tokens

    def get(self, uid: int) -> SequenceKV:
        return self.sequences.get(uid) or SequenceKV()

    def blocks_needed(self, uid: int, new_tokens: int) -> int:
        state = self.get(uid)
        total = state.cached + new_tokens
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
        return (len(state.blocks) + free_blocks) * self.block_size - state.cached

    def query(self, uid: int, max_tokens: int, max_blocks: int) -> tuple[int, int]:
        """How many of ``max_tokens`` new tokens ``uid`` can take with at most ``max_blocks`` new blocks,
        and how many blocks that costs (FastGen's ``query``)."""
        room = self.limits.max_context - self.get(uid).cached
        tokens = max(min(max_tokens, self.tokens_fitting(uid, max_blocks), room), 0)
        return tokens, self.blocks_needed(uid, tokens)

    def can_schedule(self, uids: Sequence[int], lengths: Sequence[int]) -> SchedulingResult:
        """Whether one step of ``lengths[i]`` new tokens for each ``uids[i]`` fits now, with no preemption."""
        limits = self.limits
        new = sum(uid not in self.sequences for uid in uids)
        if len(self.sequences) + new > limits.max_tracked_sequences:
            return SchedulingResult.EngineSequenceLimitExceeded
        if len(uids) > limits.max_ragged_sequence_count:
            return SchedulingResult.BatchSequenceLimitExceeded
        if sum(lengths) > limits.max_ragged_batch_size:
            return SchedulingResult.BatchTokenLimitExceeded
        if any(self.get(u).cached + n > limits.max_context for u, n in zip(uids, lengths)):
            return SchedulingResult.SequenceTokenLimitExceeded
        if sum(self.blocks_needed(u, n) for u, n in zip(uids, lengths)) > self.free_blocks:
            return SchedulingResult.KVCacheLimitExceeded
        return SchedulingResult.Success

    def reserve(self, uid: int, new_tokens: int, prompt_length: Optional[int] = None) -> SequenceKV:
        """Tracks ``uid`` (new or known) and allocates the blocks its next ``new_tokens`` need. A sequence
        without a prompt length yet takes ``prompt_length`` (the scheduler gives it at admission, so it
        holds across chunks and preemptions); it is kept from then on."""
        state = self.sequences.get(uid)
        if state is None:
            if len(self.sequences) >= self.limits.max_tracked_sequences:
                raise RuntimeError(f"more than max_tracked_sequences={self.limits.max_tracked_sequences} "
                                   "sequences in flight")
            state = self.sequences[uid] = SequenceKV()
        if state.cached + new_tokens > self.limits.max_context:
            raise ValueError(f"sequence {uid} would hold {state.cached + new_tokens} tokens, "
                             f"more than max_context={self.limits.max_context}")
        state.blocks.extend(self.allocator.allocate(self.blocks_needed(uid, new_tokens)))
        if not state.prompt_length and prompt_length:
            state.prompt_length = prompt_length
        return state

    def adopt_prefix(self, uid: int, tokens: list[int], prompt_length: Optional[int] = None) -> Optional[SequenceKV]:
        """Starts tracking ``uid`` on the cached blocks that hold a prefix of ``tokens`` (of a sequence whose
        prompt is ``prompt_length`` long, default all of ``tokens``); returns its record, or None without a
        prefix cache or a hit."""
        if self.prefix_cache is None or uid in self.sequences:
            return None
        prompt_length = prompt_length or len(tokens)
        blocks, keys = self.prefix_cache.match(tokens, self._root_key(prompt_length))
        if not blocks:
            return None
        cached = len(blocks) * self.block_size
        state = self.sequences[uid] = SequenceKV(blocks, cached, tokens=list(tokens[:cached]), block_keys=keys,
                                                 prompt_length=prompt_length)
        return state

    def _root_key(self, prompt_length: int) -> Optional[int]:
        variant = self.prompt_variant(prompt_length) if self.prompt_variant is not None else None
        return None if variant is None else hash(("prompt variant", variant))

    def commit(self, uid: int, tokens: list[int]) -> None:
        """Counts ``tokens`` as cached (after the forward pass wrote them): blocks they fill join the
        prefix cache; under a window, leading blocks no later query sees go back to the allocator."""
        state = self.sequences[uid]
        state.cached += len(tokens)
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
        # later queries sit at positions >= cached and see keys j > position - window
        first_visible = max(state.cached - self.window + 1, 0)
        outside = first_visible // self.block_size
        if outside > state.released:
            self.allocator.free(state.blocks[state.released:outside])
            state.released = outside

    def flush(self, uid: int) -> None:
        """Forgets ``uid`` and frees its KV blocks."""
        state = self.sequences.pop(uid, None)
        if state is not None:
            self.allocator.free(state.blocks[state.released:])
