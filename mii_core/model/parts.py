"""Which block the generic decoder builds for each part of the model: the seam where a family supplies its
own module where the declarative :class:`~mii_core.model.spec.DecoderSpec` does not fit.

An architecture plugin's ``build_model`` passes ``DecoderParts`` with some factories replaced, e.g. its own
rotary part (a rope of its own) or attention (a subclass of :class:`~mii_core.model.attention.Attention`),
built from the core's parallel layers and kernel ops; every part it leaves alone is the core's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Protocol

import torch
from torch import nn

from mii_core.batch import RaggedBatch
from mii_core.model.attention import Attention
from mii_core.model.mlp import build_mlp
from mii_core.model.ops import KernelOps
from mii_core.distributed.parallel_context import ParallelContext
from mii_core.model.norm import Norm
from mii_core.model.rotary import RotaryEmbedding
from mii_core.model.spec import DecoderSpec


class RotaryPart(Protocol):
    """What the decoder asks of its rotary part (:class:`~mii_core.model.rotary.RotaryEmbedding` is one)."""

    def tables(self, batch: RaggedBatch, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The step's (cos, sin) [T, rotary_dim] for ``rotary_write_kv``, once per step for all layers."""

    def prompt_variant(self, prompt_length: int) -> Optional[int]:
        """What keys a sequence's cached blocks besides its tokens (the model's hook of that name)."""


# (spec, ctx, kernels, device, dtype, layer_index) -> module: an attention or MLP block of layer ``layer_index``
BlockFactory = Callable[[DecoderSpec, ParallelContext, KernelOps, torch.device, torch.dtype, int], nn.Module]
# (spec, kernels, device, dtype) -> a norm over the hidden size: ``norm(x)``, ``norm(x, residual) -> (y, sum)``
NormFactory = Callable[[DecoderSpec, KernelOps, torch.device, torch.dtype], nn.Module]
# (spec, device) -> the rotary part, or None for a model without rotary positions
RotaryFactory = Callable[[DecoderSpec, torch.device], Optional[RotaryPart]]


def spec_rotary(spec: DecoderSpec, device: torch.device) -> Optional[RotaryEmbedding]:
    """The core's rotary part for ``spec.rope`` (None when the spec has no rope)."""
    if spec.rope is None:
        return None
    return RotaryEmbedding(spec.rope, spec.head_dim, spec.max_position_embeddings, device)


def spec_norm(spec: DecoderSpec, kernels: KernelOps, device: torch.device, dtype: torch.dtype) -> nn.Module:
    return Norm(spec.norm, spec.hidden_size, spec.norm_eps, kernels, device, dtype, bias=spec.norm_bias)


@dataclass(frozen=True)
class DecoderParts:
    """The factories :class:`~mii_core.model.decoder.DecoderModel` builds its blocks with."""

    rotary: RotaryFactory = spec_rotary
    attention: BlockFactory = Attention
    mlp: BlockFactory = build_mlp
    norm: NormFactory = spec_norm
