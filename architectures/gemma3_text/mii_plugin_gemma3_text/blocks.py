"""Gemma 3's own parts: a rotary part per layer type (global layers: ``rope_theta`` and its scaling; local
sliding-window layers: ``rope_local_base_freq``), and an attention that takes its layer type's tables, puts
Gemma's (1 + w) RMSNorm on each query and key head and a post-norm on its output."""
from __future__ import annotations

from typing import Optional

import torch

from mii_core.batch import RaggedBatch
from mii_core.model.head_norm import HeadNormAttention
from mii_core.model.norm import OffsetRMSNorm
from mii_core.model.post_norm import PostNormAttention
from mii_core.model.rotary import RotaryEmbedding
from mii_core.model.spec import DecoderSpec, RopeSpec

FULL, SLIDING = "full_attention", "sliding_attention"


class LayerTypeRotary:
    """A ``DecoderParts.rotary`` part: the core's rotary embedding for each layer type; ``tables`` gives
    {layer type: (cos, sin)}, made once per step for all layers."""

    def __init__(self, spec: DecoderSpec, device: torch.device, *, ropes: dict[str, RopeSpec]):
        self.ropes = {kind: RotaryEmbedding(rope, spec.head_dim, spec.max_position_embeddings, device)
                      for kind, rope in ropes.items()}

    def prompt_variant(self, prompt_length: int) -> Optional[int]:
        return None  # every table depends on the positions alone

    def tables(self, batch: RaggedBatch, dtype: torch.dtype) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {kind: rope.tables(batch, dtype) for kind, rope in self.ropes.items()}


class Gemma3Attention(PostNormAttention, HeadNormAttention):
    """Post-norm attention with (1 + w) q/k head norms, on the rotary tables of its layer's type (a layer
    with a window is a sliding one). Engine parameters: ``q_norm.weight``, ``k_norm.weight``,
    ``post_norm.weight``."""

    def __init__(self, spec, ctx, kernels, device, dtype, layer_index: int = 0):
        super().__init__(spec, ctx, kernels, device, dtype, layer_index)
        self.layer_type = FULL if spec.window_of(layer_index) is None else SLIDING

    def head_norm(self, spec: DecoderSpec, kernels, device: torch.device, dtype: torch.dtype) -> OffsetRMSNorm:
        return OffsetRMSNorm(spec.head_dim, spec.norm_eps, kernels, device, dtype)

    def forward(self, hidden, batch, rope, kv_cache) -> torch.Tensor:
        return super().forward(hidden, batch, rope[self.layer_type], kv_cache)
