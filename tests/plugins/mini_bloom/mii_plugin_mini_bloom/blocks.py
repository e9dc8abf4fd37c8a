"""Bloom's two blocks the generic decoder lacks, each built from the core's: attention with ALiBi biases
(the paged attention op's ``alibi_slopes``) and a decoder whose embeddings pass a LayerNorm first."""
from __future__ import annotations

import math
from dataclasses import replace

import torch

from mii_core.batch import RaggedBatch
from mii_core.model.attention import Attention
from mii_core.model.decoder import DecoderModel
from mii_core.model.norm import Norm


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """Each head's slope, as HF's ``build_alibi_tensor`` computes it (float32 powers, so bit for bit): a
    geometric series for the largest power of two of heads, then every other slope of the next power's."""
    closest = 2 ** math.floor(math.log2(num_heads))
    base = torch.tensor(2 ** (-(2 ** -(math.log2(closest) - 3))), dtype=torch.float32)
    slopes = torch.pow(base, torch.arange(1, 1 + closest, dtype=torch.int32))
    if closest != num_heads:
        extra_base = torch.tensor(2 ** (-(2 ** -(math.log2(2 * closest) - 3))), dtype=torch.float32)
        odd_powers = torch.arange(1, 1 + 2 * (num_heads - closest), 2, dtype=torch.int32)
        slopes = torch.cat([slopes, torch.pow(extra_base, odd_powers)])
    return slopes


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
