"""MII's ``enable_cuda_graph`` for Stable Diffusion: the UNet's denoising step replayed from a CUDA graph.

The step is dozens of small kernels whose launches dominate at batch 1; replaying a captured graph
launches them at once. One graph per input shape (batch, latent size, text length, dtype), captured at the
first step of that shape by ``mii_core.legacy.static_calls`` (eager warm-up runs on a side stream, as
PyTorch asks), all sharing one memory pool. Calls the graph cannot stand for (extra conditioning such as
ControlNet residuals or IP-Adapter embeddings) run the UNet as usual."""
from __future__ import annotations

import logging
from typing import Any, Callable

import torch

from mii_core.legacy.static_calls import CudaGraphCapture, StaticCall

log = logging.getLogger(__name__)


class CudaGraphUNet:
    """Stands in for ``unet.forward`` (``install``); the pipeline calls the module as before."""

    def __init__(self, eager_forward: Callable[..., Any], device: torch.device | str) -> None:
        self.eager_forward = eager_forward
        self.graphs: dict[tuple, StaticCall] = {}
        self.capture = CudaGraphCapture(device)

    @classmethod
    def install(cls, unet: torch.nn.Module) -> "CudaGraphUNet":
        graphed = cls(unet.forward, unet.device)
        unet.forward = graphed  # nn.Module.__call__ looks the instance attribute up first
        log.info("enable_cuda_graph: the UNet's step is captured in a CUDA graph per input shape")
        return graphed

    def __call__(self, sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor, *args: Any,
                 return_dict: bool = True, **kwargs: Any) -> Any:
        if args or any(value is not None for value in kwargs.values()) or not torch.is_tensor(timestep):
            return self.eager_forward(sample, timestep, encoder_hidden_states, *args, return_dict=return_dict,
                                      **kwargs)
        inputs = {"sample": sample, "timestep": timestep, "encoder_hidden_states": encoder_hidden_states}
        captured = self._graph_for(inputs)
        for name, value in inputs.items():
            captured.inputs[name].copy_(value)
        captured.replay()
        output = captured.outputs["sample"].clone()  # the next replay overwrites the static output
        if not return_dict:
            return (output,)
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

        return UNet2DConditionOutput(sample=output)

    def _graph_for(self, inputs: dict[str, torch.Tensor]) -> StaticCall:
        key = tuple((tuple(value.shape), value.dtype) for value in inputs.values())
        if key not in self.graphs:
            buffers = {name: value.clone() for name, value in inputs.items()}
            self.graphs[key] = self.capture(self._step, buffers)
            log.info("captured a CUDA graph of the UNet for latents %s", tuple(inputs["sample"].shape))
        return self.graphs[key]

    def _step(self, sample: torch.Tensor, timestep: torch.Tensor,
              encoder_hidden_states: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"sample": self.eager_forward(sample, timestep, encoder_hidden_states, return_dict=False)[0]}
