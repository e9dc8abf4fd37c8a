"""Gemma (1) as a declaration: HF's common decoder layout (names and config keys) with the embeddings
times sqrt(hidden_size), RMSNorms scaling by (1 + w) in float32 (the core's ``offset_rms_norm`` part),
a GeGLU MLP (tanh GELU), ``head_dim`` apart from hidden / heads (256), multi-query (2B) or multi-head
(7B) attention, tied embeddings."""
from __future__ import annotations

from typing import Any

import torch

from mii_core.distributed.parallel_context import ParallelContext
from mii_core.model.activations import GATED_ACTIVATIONS
from mii_core.model.decoder import DecoderModel
from mii_core.model.hf_common import causal_only, decoder_rules, decoder_spec
from mii_core.model.norm import offset_rms_norm
from mii_core.model.parts import DecoderParts
from mii_core.model.policy import ArchitecturePolicy
from mii_core.model.spec import DecoderSpec


class GemmaPolicy(ArchitecturePolicy):
    weight_rules = decoder_rules()

    def build_spec(self, hf: dict[str, Any]) -> DecoderSpec:
        causal_only(hf)
        return decoder_spec(hf, activation=gemma_activation(hf.get("hidden_act")),
                            embedding_multiplier=hf["hidden_size"] ** 0.5,
                            tie_word_embeddings=hf.get("tie_word_embeddings", True))

    def build_model(self, ctx: ParallelContext, kernels, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        return DecoderModel(self.spec, ctx, kernels, device, dtype, DecoderParts(norm=offset_rms_norm))


def gemma_activation(hidden_act: Any) -> str:
    """GemmaConfig's reading: the released configs' "gelu" means the tanh approximation."""
    activation = "gelu_pytorch_tanh" if hidden_act in (None, "gelu") else hidden_act
    if activation not in GATED_ACTIVATIONS:
        raise ValueError(f"gemma: hidden_act '{hidden_act}' is not supported "
                         f"(supported: {', '.join(GATED_ACTIVATIONS)})")
    return activation

