"""Bloom's one block the generic decoder lacks: a LayerNorm on the word embeddings, before the first layer."""
from __future__ import annotations

import torch

from mii_core.batch import RaggedBatch
from mii_core.model.decoder import DecoderModel
from mii_core.model.parts import spec_norm


class BloomModel(DecoderModel):
    """Engine parameters: the decoder's, plus ``embed_norm.{weight,bias}`` (``word_embeddings_layernorm``)."""

    def __init__(self, spec, ctx, kernels, device, dtype, parts):
        super().__init__(spec, ctx, kernels, device, dtype, parts)
        self.embed_norm = spec_norm(spec, kernels, device, dtype)

    def embed_tokens(self, batch: RaggedBatch) -> torch.Tensor:
        return self.embed_norm(super().embed_tokens(batch))
