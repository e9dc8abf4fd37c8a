"""MII's ``enable_cuda_graph`` for task models: a function of fixed-shape tensors captured once in a CUDA
graph and replayed, so a forward pass of many small kernels costs one launch.

A :class:`StaticCall` holds the function's input buffers and output tensors; a caller copies its inputs
into ``inputs``, calls ``replay()`` and copies what it needs out of ``outputs`` before any other replay
(the graphs of one :class:`CudaGraphCapture` share a memory pool, so a later graph's scratch memory may be
an earlier one's output). Capturing is the only CUDA-specific step: :class:`EagerCapture` stands in for it
(``replay`` runs the function on the same buffers), so the code around the graphs runs the same way on a
CPU. The function must not synchronise with the host (no ``.item()``, no data-dependent Python branch).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Mapping

import torch

log = logging.getLogger(__name__)
Tensors = Mapping[str, torch.Tensor]
StaticFunction = Callable[..., dict[str, torch.Tensor]]  # keyword tensors -> named output tensors
WARM_UP_RUNS = 2  # eager runs before a capture: lazy initialisations and autotuning stay out of the graph


@dataclass(frozen=True, slots=True)
class StaticCall:
    """``function(**inputs)`` bound to fixed buffers: fill ``inputs``, ``replay()``, read ``outputs``."""

    inputs: dict[str, torch.Tensor]
    outputs: dict[str, torch.Tensor]
    replay: Callable[[], None]


class CudaGraphCapture:
    """Captures static calls on one CUDA device, all in one memory pool (PyTorch's rules for a graph:
    static buffers, warm-up on a side stream, no host synchronisation inside)."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.pool = torch.cuda.graph_pool_handle()

    def __call__(self, function: StaticFunction, inputs: Tensors) -> StaticCall:
        """The graph of ``function`` over ``inputs`` (buffers it keeps: they must not be reallocated)."""
        with torch.cuda.device(self.device):
            return self._capture(function, dict(inputs))

    def _capture(self, function: StaticFunction, buffers: dict[str, torch.Tensor]) -> StaticCall:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARM_UP_RUNS):
                function(**buffers)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: another thread's CUDA call during the capture does not invalidate it (only this
        # thread's own forbidden calls do)
        with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
            outputs = function(**buffers)
        return StaticCall(buffers, dict(outputs), graph.replay)


class EagerCapture:
    """The stand-in for :class:`CudaGraphCapture` where there is no GPU: ``replay`` runs the function again
    on the same buffers and writes into the same output tensors, as a replayed graph does."""

    def __call__(self, function: StaticFunction, inputs: Tensors) -> StaticCall:
        buffers = dict(inputs)
        outputs = dict(function(**buffers))

        def replay() -> None:
            for name, value in function(**buffers).items():
                outputs[name].copy_(value)

        return StaticCall(buffers, outputs, replay)
