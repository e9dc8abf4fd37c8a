"""FastGen's engine calls over a ragged batch: put / flush / query / can_schedule."""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import torch

from mii_core.batch import build_ragged_batch
from mii_core.engine.state_manager import SchedulingResult, StateManager
from mii_core.kv_cache import BlockAllocator, KVCache
from mii_core.kv_cache.prefix_cache import PrefixCache
from mii_core.config.engine import StateManagerConfig


log = logging.getLogger(__name__)


class InferenceEngine:
    """Owns the model, the KV cache and each sequence's cache state. Knows nothing of sampling."""

    def __init__(self, model: torch.nn.Module, kv_cache: KVCache, config: StateManagerConfig,
                 device: torch.device, prefix_caching: bool = False) -> None:
        self.model, self.kv_cache, self.config, self.device = model, kv_cache, config, device
        self.block_size = kv_cache.shape.block_size
        self.allocator = BlockAllocator(kv_cache.num_blocks)
        # a sliding window shared by every layer lets sequences free the blocks behind it; the model's
        # spec says (build_model's contract), so the engine never asks which architecture it runs
        spec = getattr(model, "spec", None)
        window = getattr(spec, "kv_window", None)
        prefix_cache = PrefixCache(self.allocator, self.block_size) if prefix_caching and window is None else None
        self.state = StateManager(self.allocator, self.block_size, config.max_tracked_sequences, config.max_context,
                                  window, prefix_cache, model.prompt_variant)
        self._kv_layers = kv_cache.layers()
        self.graphs = None  # DecodeGraphs, when the builder captured them

    def warm_up(self, max_positions: Optional[int] = None) -> None:
        """Steps of each kind on uids no request uses (a prompt chunk; a decode beside a new prompt; many
        decodes at once), so that JIT-compiled kernels compile now, not in the middle of the first requests.
        ``max_positions``: the model's position limit (a learned position table ends there)."""
        tokens = min(self.config.max_ragged_batch_size - 3, (self.free_blocks - 2) * self.block_size,
                     self.config.max_context - 2, (max_positions or self.config.max_context) - 2)
        many = min(64, self.config.max_ragged_sequence_count, self.free_blocks - 2 - tokens // self.block_size)
        if tokens < 2:
            return
        uids = [-1, -2] + [-3 - i for i in range(max(many, 0))]
        try:
            self.put(uids[:1], [[0] * tokens])
            self.put(uids[:2], [[0], [0, 0]])
            if many > 0:
                self.put(uids[2:], [[0]] * many)
        finally:
            for uid in uids:
                self.flush(uid)

    def capture_decode_graphs(self, max_batch: int) -> float:
        """Captures CUDA graphs of decode steps up to ``max_batch`` sequences; returns the seconds taken."""
        from mii_core.engine.cuda_graphs import DecodeGraphs

        max_blocks = -(-self.config.max_context // self.block_size)
        graphs = DecodeGraphs(self.model, self._kv_layers, self.block_size, max_blocks, self.kv_cache.scratch_block,
                              min(max_batch, self.config.max_ragged_sequence_count), self.device)
        try:
            seconds = graphs.capture() if self.device.type == "cuda" else 0.0
        except (RuntimeError, torch.OutOfMemoryError) as exc:  # a kernel that cannot be captured: stay eager
            log.warning("decode steps stay eager: CUDA graph capture failed (%s: %s)", type(exc).__name__, exc)
            return 0.0
        self.graphs = graphs
        return seconds

    @property
    def free_blocks(self) -> int:
        return self.allocator.num_free

    @property
    def capacity_tokens(self) -> int:
        """The most tokens one sequence can reach with the KV cache to itself: the cache's size, or, when
        the blocks behind a sliding window are freed and the window fits the cache, no cache limit
        (max_context, which the state manager enforces)."""
        cache_tokens = self.kv_cache.num_blocks * self.block_size
        if self.state.most_blocks_held(self.config.max_context) <= self.kv_cache.num_blocks:
            return max(cache_tokens, self.config.max_context)
        return cache_tokens

    def put(self, uids: Sequence[int], token_lists: Sequence[Sequence[int]],
            prompt_lengths: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Appends each uid's tokens, runs one forward pass, returns float32 logits [len(uids), vocab]
        of each sequence's last new token. New uids start tracking; the caller checks ``can_schedule``.
        A sequence's prompt length (a rope may depend on it) is fixed once: by the scheduler at admission,
        else ``prompt_lengths[i]``, else the length its first put brings it to."""
        if len(uids) != len(token_lists) or not uids:
            raise ValueError("put needs one non-empty token list per uid")
        if prompt_lengths is not None and (len(prompt_lengths) != len(uids) or min(prompt_lengths) < 1):
            raise ValueError("put needs one prompt length >= 1 per uid (or none)")
        if any(len(tokens) == 0 for tokens in token_lists):
            raise ValueError("put got an empty token list")
        if len(set(uids)) != len(uids):
            raise ValueError("put got the same uid twice in one batch")
        if prompt_lengths is None:  # a new sequence's prompt: what its first put brings it to
            prompt_lengths = [self.state.get(uid).seen_tokens + len(t) for uid, t in zip(uids, token_lists)]
        states = [self.state.reserve(uid, len(tokens), n) for uid, tokens, n in zip(uids, token_lists, prompt_lengths)]
        seen, tables = [s.seen_tokens for s in states], [s.blocks for s in states]
        prompt_lens = [s.prompt_length for s in states]
        if self._graph_step(token_lists, tables):
            logits = self.graphs.run([t[0] for t in token_lists], seen, tables, prompt_lens)
        else:
            batch = build_ragged_batch(token_lists, seen, tables, self.block_size, self.device, prompt_lens)
            logits = self.model(batch, self._kv_layers)
        for uid, tokens in zip(uids, token_lists):
            self.state.commit(uid, list(tokens))
        return logits

    def can_put_ahead(self, uids: Sequence[int]) -> bool:
        """Whether a decode step of one more token for each of ``uids`` fits now (KV blocks, max_context)
        with no preemption: the condition for :meth:`put_ahead`."""
        states = [self.state.get(uid) for uid in uids]
        if any(s.seen_tokens + 1 > self.config.max_context for s in states):
            return False
        needed = [self.state.blocks_needed(uid, 1) for uid in uids]
        return sum(needed) <= self.free_blocks

    def put_ahead(self, uids: Sequence[int], tokens: torch.Tensor) -> torch.Tensor:
        """A decode step whose tokens are still on the device (the last step's samples, not read yet):
        one token per uid, fed in on the stream, so the host need not wait for them. Their values are
        committed later with :meth:`commit_ahead`. The caller checked :meth:`can_put_ahead`."""
        states = [self.state.reserve(uid, 1) for uid in uids]
        seen, tables = [s.seen_tokens for s in states], [s.blocks for s in states]
        prompt_lens = [s.prompt_length for s in states]
        placeholders = [[0]] * len(uids)
        if self._graph_step(placeholders, tables):
            return self.graphs.run(tokens, seen, tables, prompt_lens)
        batch = build_ragged_batch(placeholders, seen, tables, self.block_size, self.device, prompt_lens)
        batch.token_ids = tokens
        return self.model(batch, self._kv_layers)

    def commit_ahead(self, uid: int, token: int) -> None:
        """``uid``'s token fed by :meth:`put_ahead`, now read: it counts as cached from here on."""
        self.state.commit(uid, [token])

    def _graph_step(self, token_lists: Sequence[Sequence[int]], tables: Sequence[Sequence[int]]) -> bool:
        return (self.graphs is not None and all(len(t) == 1 for t in token_lists)
                and self.graphs.fits(len(token_lists), max(len(t) for t in tables)))

    def flush(self, uid: int) -> None:
        """Forgets ``uid`` and frees its KV blocks."""
        self.state.flush(uid)

    def query(self, uid: int, max_tokens: int, max_blocks: int) -> tuple[int, int]:
        """How many of ``max_tokens`` new tokens ``uid`` can take with at most ``max_blocks`` new blocks,
        and how many blocks that costs."""
        room = self.state.get(uid).seen_tokens
        tokens = min(max_tokens, self.state.tokens_fitting(uid, max_blocks), self.config.max_context - room)
        tokens = max(tokens, 0)
        return tokens, self.state.blocks_needed(uid, tokens)

    def can_schedule(self, uids: Sequence[int], lengths: Sequence[int]) -> SchedulingResult:
        new = sum(uid not in self.state.sequences for uid in uids)
        if len(self.state.sequences) + new > self.config.max_tracked_sequences:
            return SchedulingResult.EngineSequenceLimitExceeded
        if len(uids) > self.config.max_ragged_sequence_count:
            return SchedulingResult.BatchSequenceLimitExceeded
        if sum(lengths) > self.config.max_ragged_batch_size:
            return SchedulingResult.BatchTokenLimitExceeded
        if any(self.state.get(u).seen_tokens + n > self.config.max_context for u, n in zip(uids, lengths)):
            return SchedulingResult.SequenceTokenLimitExceeded
        if sum(self.state.blocks_needed(u, n) for u, n in zip(uids, lengths)) > self.free_blocks:
            return SchedulingResult.KVCacheLimitExceeded
        return SchedulingResult.Success
