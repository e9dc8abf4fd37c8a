"""Bloom's two blocks the generic decoder lacks, each built from the core's: attention with ALiBi biases
(the paged attention op's ``alibi_slopes``; the slopes from the core's public ``alibi_slopes``) and a decoder
whose embeddings pass a LayerNorm first. (mii-core now ships both in architectures/bloom; this plugin stays
as an outside author would write them from ``Attention`` and ``DecoderModel``.)"""
from __future__ import annotations

from dataclasses import replace

import torch

from mii_core.batch import RaggedBatch
from mii_core.model.alibi import alibi_slopes
from mii_core.model.attention import Attention
from mii_core.model.decoder import DecoderModel
from mii_core.model.norm import Norm


class AlibiAttention(Attention):
    """The core's attention, its scores biased by ALiBi; each rank keeps the slopes of its own heads."""

    def __init__(self, spec, ctx, kernels, device, dtype, layer_index: int = 0):
        super().__init__(spec, ctx, kernels, device, dtype, layer_index)
        first, count = ctx.even_slice(spec.num_heads)
        slopes = alibi_slopes(spec.num_heads)[first:first + count].to(device)
        self.params = replace(self.params, alibi_slopes=slopes)


class BloomModel(DecoderModel):
    """Engine parameters: the decoder's, plus ``embed_norm.{weight,bias}`` (``word_embeddings_layernorm``)."""

    def __init__(self, spec, ctx, kernels, device, dtype, parts):
        super().__init__(spec, ctx, kernels, device, dtype, parts)
        self.embed_norm = Norm("layer", spec.hidden_size, spec.norm_eps, kernels, device, dtype)

    def embed_tokens(self, batch: RaggedBatch) -> torch.Tensor:
        return self.embed_norm(super().embed_tokens(batch))
