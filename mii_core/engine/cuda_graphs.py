"""CUDA graphs of decode-only steps, captured once for a ladder of batch sizes and replayed.

A decode step at small batch is bound by kernel launches, not arithmetic: replaying one graph turns
hundreds of launches into one. Each graph reads its inputs from static device buffers; a step of n
sequences replays the smallest captured size >= n with the spare rows padded (token 0 at position 0,
writing its K/V into a scratch block no sequence owns, attending over that block alone). Mixed steps
(prompt chunks) run eagerly. Kernels used inside must not synchronise with the host.
"""
from __future__ import annotations

import logging
import time
from array import array
from itertools import chain
from typing import Sequence

import torch

from mii_core.batch import RaggedBatch

log = logging.getLogger(__name__)


def batch_size_ladder(max_batch: int) -> list[int]:
    """1, 2, 4, 8, 16, 24, 32, then every 32 up to ``max_batch`` (always included): a step of n sequences
    pads to the next size, and a decode step costs about the same at 224 rows as at 256."""
    sizes = [s for s in (1, 2, 4, 8, 16, 24) if s < max_batch]
    sizes += list(range(32, max_batch, 32))
    return sorted(set(sizes + [max_batch]))


class DecodeGraphs:
    def __init__(self, model: torch.nn.Module, kv_layers: list, block_size: int, max_blocks: int,
                 scratch_block: int, max_batch: int, device: torch.device) -> None:
        self.model, self.kv_layers, self.device = model, kv_layers, device
        self.block_size, self.max_blocks, self.scratch_block = block_size, max_blocks, scratch_block
        self.sizes = batch_size_ladder(max_batch)
        largest = self.sizes[-1]
        long = dict(dtype=torch.int64, device=device)
        pinned = device.type == "cuda"
        # per-row inputs as the rows of one [5, largest] tensor (token, position, slot, context length,
        # prompt length), mirrored in pinned host memory, so a step's inputs travel in two copies (header, tables)
        self._host_header = torch.empty(5, largest, dtype=torch.int64, pin_memory=pinned)
        self._host_tables = torch.full((largest, max_blocks), scratch_block, dtype=torch.int64, pin_memory=pinned)
        self._header = torch.zeros(5, largest, **long)
        self.token_ids, self.positions, self.slot_mapping, self.context_lens, self.prompt_lens = self._header.unbind(0)
        self.slot_mapping.fill_(scratch_block * block_size)
        self.context_lens.fill_(1)
        self.prompt_lens.fill_(1)
        self.block_tables = torch.full((largest, max_blocks), scratch_block, **long)
        self.arange = torch.arange(largest + 1, **long)
        self.ones = torch.ones(largest, **long)
        # every tensor a graph reads must outlive it: the static batches hold views of these buffers only
        self._padding = torch.tensor([[0], [0], [scratch_block * block_size], [1], [1]], dtype=torch.int64)
        self._copied = torch.cuda.Event() if pinned else None
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}

    def static_batch(self, size: int) -> RaggedBatch:
        return RaggedBatch(
            token_ids=self.token_ids[:size], positions=self.positions[:size],
            slot_mapping=self.slot_mapping[:size], query_start=self.arange[:size + 1],
            query_lens=self.ones[:size], context_lens=self.context_lens[:size], prompt_lens=self.prompt_lens[:size],
            block_tables=self.block_tables[:size], last_token_index=self.arange[:size], logit_index=self.arange[:size],
            decode_seqs=self.arange[:size], prefill_seqs=self.arange[:0],
            max_query_len=1, max_context_len=self.max_blocks * self.block_size, max_prefill_context_len=0,
            block_size=self.block_size)

    def capture(self) -> float:
        """Captures every size, largest first so the smaller graphs reuse its memory pool; returns seconds."""
        start, pool = time.perf_counter(), None
        stream = torch.cuda.Stream(self.device)
        for size in reversed(self.sizes):
            batch = self.static_batch(size)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):  # warm-up: lazy inits and autotuning stay out of the graph
                self.model(batch, self.kv_layers)
            torch.cuda.current_stream(self.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self.outputs[size] = self.model(batch, self.kv_layers)
            pool = graph.pool()
            self.graphs[size] = graph
        torch.cuda.synchronize(self.device)
        return time.perf_counter() - start

    def fits(self, num_seqs: int, widest_table: int) -> bool:
        return num_seqs <= self.sizes[-1] and widest_table <= self.max_blocks

    def run(self, tokens: Sequence[int] | torch.Tensor, cached: Sequence[int],
            tables: Sequence[Sequence[int]], prompt_lens: Sequence[int]) -> torch.Tensor:
        """One decode step: ``tokens[i]`` is sequence i's single new token, a host value or, as a device
        tensor, the last step's sample not read yet (copied in on the stream). Returns logits [n, vocab]."""
        n = len(cached)
        tokens_device = tokens if isinstance(tokens, torch.Tensor) else None
        if tokens_device is not None:
            tokens = [0] * n
        size = next(s for s in self.sizes if s >= n)
        width = max(len(t) for t in tables)
        if self._copied is not None:
            self._copied.synchronize()  # the last step's copies have left the pinned buffers
        slots = [table[seen // self.block_size] * self.block_size + seen % self.block_size
                 for table, seen in zip(tables, cached)]
        header = array("q", chain(tokens, cached, slots, (seen + 1 for seen in cached), prompt_lens))
        self._host_header[:, :n] = torch.frombuffer(header, dtype=torch.int64).view(5, n)
        self._host_header[:, n:size] = self._padding
        flat, pad = array("q"), array("q", [self.scratch_block]) * width
        for table in tables:
            flat.extend(table)
            flat.extend(pad[:width - len(table)])
        self._host_tables[:n, :width] = torch.frombuffer(flat, dtype=torch.int64).view(n, width)
        self._host_tables[n:size, 0] = self.scratch_block  # a padded row reads its first block only
        self._header.copy_(self._host_header, non_blocking=True)
        if tokens_device is not None:
            self.token_ids[:n].copy_(tokens_device)
        self.block_tables[:size].copy_(self._host_tables[:size], non_blocking=True)
        if self._copied is not None:
            self._copied.record()
        if size in self.graphs:
            self.graphs[size].replay()
        else:  # not captured (CPU, or capture failed): the same padded step, run eagerly
            self.outputs[size] = self.model(self.static_batch(size), self.kv_layers)
        return self.outputs[size][:n]
