"""The engine: a scheduler (which owns every sequence's state and KV blocks) and a model runner (which
runs the scheduler's plans), with FastGen's calls ``put`` / ``flush`` / ``query`` / ``can_schedule`` for a
caller that plans its own steps (the warm-up, benchmarks, tests; MII's raw engine API)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from mii_core.engine.model_runner import ModelRunner
from mii_core.kv_cache.manager import SchedulingResult
from mii_core.model.quantization import FP8_WEIGHT_ONLY_MAX_TOKENS
from mii_core.scheduler.splitfuse import Scheduler


class InferenceEngine:
    def __init__(self, runner: ModelRunner, scheduler: Scheduler) -> None:
        self.runner, self.scheduler = runner, scheduler
        self.config = scheduler.limits
        # what never changes after the build, named here for the engine's callers
        self.model, self.device, self.kv_cache, self.block_size = (runner.model, runner.device, runner.kv_cache,
                                                                   runner.block_size)

    @property
    def free_blocks(self) -> int:
        return self.scheduler.kv.free_blocks

    @property
    def capacity_tokens(self) -> int:
        """The most tokens one sequence can reach with the KV cache to itself."""
        return self.scheduler.kv.capacity_tokens

    @property
    def graphs(self):
        """The captured decode graphs (None: decode steps run eagerly)."""
        return self.runner.graphs

    @graphs.setter
    def graphs(self, graphs) -> None:
        self.runner.graphs = graphs

    def put(self, uids: Sequence[int], token_lists: Sequence[Sequence[int]],
            prompt_lengths: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Appends each uid's tokens, runs one forward pass, returns float32 logits [len(uids), vocab]
        of each sequence's last new token. New uids start tracking; the caller checks ``can_schedule``.
        A sequence's prompt length (the model may depend on it) is fixed once: ``prompt_lengths[i]``,
        else the length its first put brings it to."""
        if len(uids) != len(token_lists) or not uids:
            raise ValueError("put needs one non-empty token list per uid")
        if prompt_lengths is not None and (len(prompt_lengths) != len(uids) or min(prompt_lengths) < 1):
            raise ValueError("put needs one prompt length >= 1 per uid (or none)")
        if any(len(tokens) == 0 for tokens in token_lists):
            raise ValueError("put got an empty token list")
        if len(set(uids)) != len(uids):
            raise ValueError("put got the same uid twice in one batch")
        plan = self.scheduler.plan_tokens(uids, token_lists, prompt_lengths)
        logits = self.runner.run(plan)
        self.scheduler.commit(plan)
        return logits

    def flush(self, uid: int) -> None:
        """Forgets ``uid`` and frees its KV blocks."""
        self.scheduler.free(uid)

    def query(self, uid: int, max_tokens: int, max_blocks: int) -> tuple[int, int]:
        """How many of ``max_tokens`` new tokens ``uid`` can take with at most ``max_blocks`` new blocks,
        and how many blocks that costs."""
        return self.scheduler.kv.query(uid, max_tokens, max_blocks)

    def can_schedule(self, uids: Sequence[int], lengths: Sequence[int]) -> SchedulingResult:
        return self.scheduler.kv.can_schedule(uids, lengths)

    def warm_up(self, max_positions: Optional[int] = None) -> None:
        """Steps of each kind on uids no request uses (a prompt chunk; a decode beside a new prompt, in a step of
        a few tokens and in one of more; many decodes at once), so that JIT-compiled kernels compile now, not in
        the middle of the first requests. ``max_positions``: the model's position limit (a learned position
        table ends there)."""
        limits, free, size = self.config, self.free_blocks, self.block_size
        positions = max_positions or limits.max_context
        tokens = min(limits.max_ragged_batch_size - 3, (free - 2) * size, limits.max_context - 2, positions - 2)
        spare = free - 2 - tokens // size  # blocks left once the first two sequences hold theirs
        wide, wide_blocks = self._wide_prompt(spare, positions)
        many = min(64, limits.max_ragged_sequence_count, spare - wide_blocks)
        if tokens < 2:
            return
        uids = [-1, -2, -3] + [-4 - i for i in range(max(many, 0))]
        try:
            self.put(uids[:1], [[0] * tokens])
            self.put(uids[:2], [[0], [0, 0]])
            if wide:
                self.put(uids[1:3], [[0], [0] * wide])
            if many > 0:
                self.put(uids[3:], [[0]] * many)
        finally:
            for uid in uids:
                self.flush(uid)

    def _wide_prompt(self, spare_blocks: int, positions: int) -> tuple[int, int]:
        """(tokens, blocks taken) of the prompt the warm-up puts beside the second sequence's decode, so that
        the step holds more tokens than the few-token paths take (``FP8_WEIGHT_ONLY_MAX_TOKENS``): a busy
        workload's mixed steps, whose kernels differ (in mode fp8 the attention then joins its output's
        absmax for the o projection, a variant the step of a few tokens does not compile). (0, 0) where the
        limits leave no room for it."""
        wide = min(2 * FP8_WEIGHT_ONLY_MAX_TOKENS, self.config.max_ragged_batch_size - 1,
                   self.config.max_context - 1, positions - 1)
        # the prompt's blocks, and any the decode's third token opens
        blocks = -(-wide // self.block_size) + -(-3 // self.block_size) - 1
        fits = wide > FP8_WEIGHT_ONLY_MAX_TOKENS and blocks <= spare_blocks
        return (wide, blocks) if fits and self.config.max_ragged_sequence_count >= 3 else (0, 0)

    def capture_decode_graphs(self, max_batch: int) -> float:
        """Captures CUDA graphs of decode steps up to ``max_batch`` sequences; returns the seconds taken."""
        return self.runner.capture_decode_graphs(min(max_batch, self.config.max_ragged_sequence_count),
                                                 self.config.max_context)
