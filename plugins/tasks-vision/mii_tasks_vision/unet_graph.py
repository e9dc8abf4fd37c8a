"""MII's ``enable_cuda_graph`` for Stable Diffusion: the UNet's denoising step replayed from a CUDA graph.

The step is dozens of small kernels whose launches dominate at batch 1; replaying a captured graph
launches them at once. One graph per input shape (batch, latent size, text length, dtype), captured at the
first step of that shape (after two eager warm-up runs on a side stream, as PyTorch asks), all sharing one
memory pool. Calls the graph cannot stand for (extra conditioning such as ControlNet residuals or
IP-Adapter embeddings) run the UNet as usual."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import torch

log = logging.getLogger(__name__)
WARM_UP_RUNS = 2


@dataclass(slots=True)
class _Captured:
    graph: torch.cuda.CUDAGraph
    sample: torch.Tensor
    timestep: torch.Tensor
    encoder_hidden_states: torch.Tensor
    output: torch.Tensor


class CudaGraphUNet:
    """Stands in for ``unet.forward`` (``install``); the pipeline calls the module as before."""

    def __init__(self, eager_forward: Callable[..., Any]) -> None:
        self.eager_forward = eager_forward
        self.graphs: dict[tuple, _Captured] = {}
        self.pool = torch.cuda.graph_pool_handle()

    @classmethod
    def install(cls, unet: torch.nn.Module) -> "CudaGraphUNet":
        graphed = cls(unet.forward)
        unet.forward = graphed  # nn.Module.__call__ looks the instance attribute up first
        log.info("enable_cuda_graph: the UNet's step is captured in a CUDA graph per input shape")
        return graphed

    def __call__(self, sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor, *args: Any,
                 return_dict: bool = True, **kwargs: Any) -> Any:
        if args or any(value is not None for value in kwargs.values()) or not torch.is_tensor(timestep):
            return self.eager_forward(sample, timestep, encoder_hidden_states, *args, return_dict=return_dict,
                                      **kwargs)
        captured = self._graph_for(sample, timestep, encoder_hidden_states)
        captured.sample.copy_(sample)
        captured.timestep.copy_(timestep)
        captured.encoder_hidden_states.copy_(encoder_hidden_states)
        captured.graph.replay()
        output = captured.output.clone()  # the next replay overwrites the static output
        if not return_dict:
            return (output,)
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

        return UNet2DConditionOutput(sample=output)

    def _graph_for(self, sample: torch.Tensor, timestep: torch.Tensor, states: torch.Tensor) -> _Captured:
        key = (tuple(sample.shape), tuple(timestep.shape), timestep.dtype, tuple(states.shape), sample.dtype)
        if key not in self.graphs:
            self.graphs[key] = self._capture(sample.clone(), timestep.clone(), states.clone())
        return self.graphs[key]

    def _capture(self, sample: torch.Tensor, timestep: torch.Tensor, states: torch.Tensor) -> _Captured:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARM_UP_RUNS):
                self.eager_forward(sample, timestep, states, return_dict=False)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            output = self.eager_forward(sample, timestep, states, return_dict=False)[0]
        log.info("captured a CUDA graph of the UNet for latents %s", tuple(sample.shape))
        return _Captured(graph, sample, timestep, states, output)
