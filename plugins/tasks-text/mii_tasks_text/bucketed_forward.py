"""``enable_cuda_graph`` for the encoder tasks: the encoder's forward pass over a batch padded up to a batch
bucket (a power of two) at the batcher's bucketed length, one static call (a CUDA graph on a GPU) per
(batch bucket, length).

A shape's call is made the first time a batch of that shape comes, not at start-up: the task model does
not know the deployment's length buckets or batch size, and a shape never asked for costs no memory (a
fill-mask call holds logits of [batch, length, vocabulary]). The spare rows repeat the batch's first query,
so every row the graph computes is a real, fully valid input (no row with nothing to attend to); the
encoder treats rows independently, so they change no real row's output. Columns past a query's tokens are
padding the attention mask hides, as in the eager path.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Optional

import torch

from mii_core.legacy.static_calls import StaticCall

log = logging.getLogger(__name__)
Capture = Callable[..., StaticCall]  # CudaGraphCapture, or EagerCapture where there is no GPU


def batch_bucket(rows: int) -> int:
    """The power of two at or above ``rows``: a batch of 5 runs in the graph of 8."""
    return 1 << (rows - 1).bit_length()


class BucketedForward:
    """Stands in for ``model(**batch)`` on collated batches ([rows, length] tensors of the same keys)."""

    def __init__(self, model: torch.nn.Module, capture: Capture) -> None:
        self.model, self.capture = model, capture
        self.calls: dict[tuple[int, int], StaticCall] = {}  # (batch bucket, length) -> its static call
        self.output_class: Optional[type] = None  # the model's output class, seen while capturing
        self.replays = 0  # forward passes answered from a static call (for tests and logs)

    def __call__(self, batch: dict[str, torch.Tensor]) -> Any:
        rows, length = batch["input_ids"].shape
        bucket = batch_bucket(rows)
        call = self.calls.get((bucket, length))
        if call is None:
            call = self.calls[(bucket, length)] = self._make_call(batch, bucket)
        for name, buffer in call.inputs.items():
            buffer[:rows].copy_(batch[name])
            buffer[rows:].copy_(batch[name][:1].expand(bucket - rows, -1))
        call.replay()
        self.replays += 1
        # copied out at once: the next replay (of this graph or another sharing its memory pool) overwrites them
        return self.output_class(**{name: value[:rows].clone() for name, value in call.outputs.items()})

    def _make_call(self, batch: dict[str, torch.Tensor], bucket: int) -> StaticCall:
        length = batch["input_ids"].shape[1]
        inputs = {}
        for name, value in batch.items():
            # the capture's warm-up runs on these buffers, so they hold a valid batch: the first row repeated
            inputs[name] = value[:1].expand(bucket, length).clone()
        call = self.capture(self._forward, inputs)
        log.info("enable_cuda_graph: captured the encoder's forward pass for a batch of %d x %d tokens",
                 bucket, length)
        return call

    def _forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        output = self.model(**inputs)
        self.output_class = type(output)
        return dict(output.items())  # the fields the model set (HF's outputs leave the others out)
