"""Runs the scheduler's plans: one forward pass per step over the flat ragged batch, or a captured CUDA
graph for a decode-only step. Holds the model and the KV cache's tensors; knows nothing of requests,
sampling or which blocks are free (the plan says where every token goes)."""
from __future__ import annotations

import logging
from typing import Optional

import torch

from mii_core.batch import build_ragged_batch
from mii_core.kv_cache import KVCache
from mii_core.scheduler.plan import StepPlan

log = logging.getLogger(__name__)


class ModelRunner:
    def __init__(self, model: torch.nn.Module, kv_cache: KVCache, device: torch.device) -> None:
        self.model, self.kv_cache, self.device = model, kv_cache, device
        self.block_size = kv_cache.shape.block_size
        self._kv_layers = kv_cache.layers()
        self.graphs = None  # DecodeGraphs, once captured

    def run(self, plan: StepPlan, device_tokens: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Float32 logits [len(plan), vocab] of each row's last new token; where ``plan.full_logits``
        asks, of every new token of those rows (``mii_core.batch.logit_rows`` lays the rows out).
        ``device_tokens``: a decode step's tokens still on the device (the last step's samples, not read
        yet), fed in on the stream in place of the plan's placeholders, so the host need not wait for them."""
        if self._graph_step(plan):
            tokens = device_tokens if device_tokens is not None else [t[0] for t in plan.token_lists]
            return self.graphs.run(tokens, plan.cached, plan.block_tables, plan.prompt_lens)
        batch = build_ragged_batch(plan.token_lists, plan.cached, plan.block_tables, self.block_size, self.device,
                                   plan.prompt_lens, plan.full_logits)
        if device_tokens is not None:
            batch.token_ids = device_tokens
        logits = self.model(batch, self._kv_layers)
        if logits.shape[0] != batch.logit_index.shape[0]:
            raise ValueError(f"the model returned logits for {logits.shape[0]} tokens where RaggedBatch.logit_index "
                             f"names {batch.logit_index.shape[0]}: its forward ignores logit_index, so it cannot "
                             "score prompts (prompt_logprobs / echo with logprobs); leave those unset")
        return logits

    def _graph_step(self, plan: StepPlan) -> bool:
        # one token per row: every row's logits are its last token's, whatever full_logits says
        return (self.graphs is not None and plan.all_decodes
                and self.graphs.fits(len(plan), max(len(t) for t in plan.block_tables)))

    def capture_decode_graphs(self, max_batch: int, max_context: int) -> float:
        """Captures CUDA graphs of decode steps up to ``max_batch`` sequences of up to ``max_context``
        tokens; returns the seconds taken (0 and eager decode steps where capture fails)."""
        from mii_core.engine.cuda_graphs import DecodeGraphs

        max_blocks = -(-max_context // self.block_size)
        graphs = DecodeGraphs(self.model, self._kv_layers, self.block_size, max_blocks, self.kv_cache.scratch_block,
                              max_batch, self.device)
        try:
            seconds = graphs.capture() if self.device.type == "cuda" else 0.0
        except (RuntimeError, torch.OutOfMemoryError) as exc:  # a kernel that cannot be captured: stay eager
            log.warning("decode steps stay eager: CUDA graph capture failed (%s: %s)", type(exc).__name__, exc)
            return 0.0
        self.graphs = graphs
        return seconds
