"""Gemma 2 as a declaration: Gemma's embeddings × sqrt(hidden), (1 + w) RMSNorms and tanh GeGLU, plus a
norm before and after both attention and MLP, attention and final logits soft-capped
(``attn_logit_softcapping``, ``final_logit_softcapping``), the query scale from ``query_pre_attn_scalar``,
and a sliding window on every other layer (``layer_types``; by default layers 0, 2, 4, ... as HF)."""
from __future__ import annotations

from functools import partial
from typing import Any, Optional

import torch

from mii_core.distributed.parallel_context import ParallelContext
from mii_core.model.decoder import DecoderModel
from mii_core.model.hf_common import (LAYER, causal_only, decoder_rules, decoder_spec, hidden_activation,
                                      windows_of_layer_types)
from mii_core.model.norm import offset_rms_norm
from mii_core.model.parts import DecoderParts
from mii_core.model.post_norm import PostNormMLP
from mii_core.model.policy import ArchitecturePolicy
from mii_core.model.spec import DecoderSpec
from mii_plugin_gemma2.blocks import SoftcappedPostNormAttention

# Gemma2Config's defaults for keys a config.json may leave out (a key present as null turns its cap off)
HF_DEFAULTS = {"attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0, "sliding_window": 4096}


def hf_value(hf: dict[str, Any], key: str) -> Any:
    return hf.get(key, HF_DEFAULTS[key])


class Gemma2Policy(ArchitecturePolicy):
    weight_rules = decoder_rules() | {
        LAYER + "post_attention_layernorm.weight": "layers.{i}.attn.post_norm.weight",
        LAYER + "pre_feedforward_layernorm.weight": "layers.{i}.mlp_norm.weight",
        LAYER + "post_feedforward_layernorm.weight": "layers.{i}.mlp.post_norm.weight",
    }

    def build_spec(self, hf: dict[str, Any]) -> DecoderSpec:
        causal_only(hf)
        return decoder_spec(hf, activation=hidden_activation(hf),
                            attention_scale=hf.get("query_pre_attn_scalar", 256) ** -0.5,
                            layer_windows=_layer_windows(hf), embedding_multiplier=hf["hidden_size"] ** 0.5,
                            tie_word_embeddings=hf.get("tie_word_embeddings", True),
                            final_logit_softcap=hf_value(hf, "final_logit_softcapping"))

    def build_model(self, ctx: ParallelContext, kernels, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        softcap = hf_value(self.hf_config, "attn_logit_softcapping")
        parts = DecoderParts(norm=offset_rms_norm, mlp=PostNormMLP,
                             attention=partial(SoftcappedPostNormAttention, softcap=softcap))
        return DecoderModel(self.spec, ctx, kernels, device, dtype, parts)


def _layer_windows(hf: dict[str, Any]) -> tuple[Optional[int], ...]:
    """Each layer's window as Gemma2Config derives ``layer_types`` (even layers sliding) and its attention
    reads them."""
    types = hf.get("layer_types") or ["sliding_attention" if (i + 1) % 2 else "full_attention"
                                      for i in range(hf["num_hidden_layers"])]
    return windows_of_layer_types(hf, types, hf_value(hf, "sliding_window"))
