"""Gemma 3's language model (``Gemma3ForCausalLM``, model_type "gemma3_text") as a declaration: Gemma 2's
scaled embeddings, (1 + w) RMSNorms, tanh GeGLU, norms before and after attention and MLP, the query scale
from ``query_pre_attn_scalar`` and an optional final-logit soft-cap, plus a (1 + w) RMSNorm on each query
and key head, local sliding-window layers and global ones (``layer_types``, or every
``sliding_window_pattern``-th layer global as HF derives them), each type with its own rope: global layers
``rope_theta`` (default 1e6) with its scaling, local ones ``rope_local_base_freq`` (default 1e4).
``attn_logit_softcapping`` is read by none of HF's Gemma 3 attention paths, so it is ignored here too."""
from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import torch

from mii_core.distributed.parallel_context import ParallelContext
from mii_core.model.decoder import DecoderModel
from mii_core.model.hf_common import (LAYER, causal_only, check_rope, decoder_rules, decoder_spec, hidden_activation,
                                      rope_spec_from_hf, windows_of_layer_types)
from mii_core.model.norm import offset_rms_norm
from mii_core.model.parts import DecoderParts
from mii_core.model.policy import ArchitecturePolicy
from mii_core.model.post_norm import PostNormMLP
from mii_core.model.spec import DecoderSpec, RopeSpec
from mii_plugin_gemma3_text.blocks import FULL, SLIDING, Gemma3Attention, LayerTypeRotary

GLOBAL_THETA, LOCAL_THETA = 1_000_000.0, 10_000.0  # Gemma3TextConfig's defaults
DEFAULTS = {"head_dim": 256, "query_pre_attn_scalar": 256, "sliding_window": 4096, "sliding_window_pattern": 6,
            "max_position_embeddings": 131_072}


class Gemma3TextPolicy(ArchitecturePolicy):
    weight_rules = decoder_rules() | {
        LAYER + "self_attn.q_norm.weight": "layers.{i}.attn.q_norm.weight",
        LAYER + "self_attn.k_norm.weight": "layers.{i}.attn.k_norm.weight",
        LAYER + "post_attention_layernorm.weight": "layers.{i}.attn.post_norm.weight",
        LAYER + "pre_feedforward_layernorm.weight": "layers.{i}.mlp_norm.weight",
        LAYER + "post_feedforward_layernorm.weight": "layers.{i}.mlp.post_norm.weight",
    }

    def build_spec(self, hf: dict[str, Any]) -> DecoderSpec:
        causal_only(hf)
        ropes = layer_type_ropes(hf)
        given = {**DEFAULTS, **hf}  # Gemma3TextConfig's defaults where config.json is silent
        spec = decoder_spec(hf, activation=hidden_activation(hf), head_dim=given["head_dim"],
                            max_position_embeddings=given["max_position_embeddings"],
                            attention_scale=given["query_pre_attn_scalar"] ** -0.5,
                            layer_windows=_layer_windows(hf), embedding_multiplier=hf["hidden_size"] ** 0.5,
                            tie_word_embeddings=hf.get("tie_word_embeddings", True), mlp_bias=False,
                            final_logit_softcap=hf.get("final_logit_softcapping"), rope=ropes[FULL])
        check_rope(dataclasses.replace(spec, rope=ropes[SLIDING]), hf.get("model_type"))  # the local rope too
        return spec

    def build_model(self, ctx: ParallelContext, kernels, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        rotary = partial(LayerTypeRotary, ropes=layer_type_ropes(self.hf_config))
        parts = DecoderParts(rotary=rotary, norm=offset_rms_norm, mlp=PostNormMLP, attention=Gemma3Attention)
        return DecoderModel(self.spec, ctx, kernels, device, dtype, parts)


def layer_type_ropes(hf: dict[str, Any]) -> dict[str, RopeSpec]:
    """{layer type: RopeSpec}: transformers v5 nests them in ``rope_parameters``; hub configs give the global
    ``rope_theta`` and ``rope_scaling`` and the local ``rope_local_base_freq``."""
    nested = hf.get("rope_parameters")
    if nested:
        if not set(nested) <= {FULL, SLIDING}:
            raise ValueError(f"gemma3_text: rope_parameters must hold '{FULL}' and '{SLIDING}' entries, got "
                             f"{sorted(nested)}; fix config.json")
        given = {kind: nested.get(kind) or {} for kind in (FULL, SLIDING)}
        thetas = {FULL: GLOBAL_THETA, SLIDING: LOCAL_THETA}
        return {kind: rope_spec_from_hf({"rope_parameters": params, "rope_theta": thetas[kind]})
                for kind, params in given.items()}
    global_rope = {"rope_scaling": hf.get("rope_scaling"), "rope_theta": hf.get("rope_theta", GLOBAL_THETA)}
    return {FULL: rope_spec_from_hf(global_rope),
            SLIDING: RopeSpec(theta=float(hf.get("rope_local_base_freq", LOCAL_THETA)))}


def _layer_windows(hf: dict[str, Any]):
    """``layer_types``, or as Gemma3TextConfig derives them: every ``sliding_window_pattern``-th layer global."""
    given = {**DEFAULTS, **hf}
    pattern = given["sliding_window_pattern"]
    types = hf.get("layer_types") or [SLIDING if (i + 1) % pattern else FULL for i in range(hf["num_hidden_layers"])]
    return windows_of_layer_types(hf, types, given["sliding_window"])
