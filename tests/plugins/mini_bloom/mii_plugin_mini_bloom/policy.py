"""Bloom as a declaration: its config, its weight names, and the two blocks of its own it builds."""
from __future__ import annotations

from typing import Any

import torch

from mii_core.model.parts import DecoderParts
from mii_core.model.hf_common import eos_ids_from_hf
from mii_core.model.policy import ArchitecturePolicy
from mii_core.model.spec import DecoderSpec
from mii_core.model.weight_rules import Rule, ungroup_qkv
from mii_plugin_mini_bloom.blocks import AlibiAttention, BloomModel

_LAYER = "transformer.h.{i}."


class BloomPolicy(ArchitecturePolicy):
    checkpoint_prefix = "transformer."

    @property
    def weight_rules(self) -> dict:
        rules = {"transformer.word_embeddings.weight": "embed.weight", "lm_head.weight": "lm_head.weight"}
        for part in ("weight", "bias"):
            rules[f"transformer.word_embeddings_layernorm.{part}"] = f"embed_norm.{part}"
            rules[f"transformer.ln_f.{part}"] = f"final_norm.{part}"
            rules[_LAYER + f"input_layernorm.{part}"] = f"layers.{{i}}.attn_norm.{part}"
            rules[_LAYER + f"post_attention_layernorm.{part}"] = f"layers.{{i}}.mlp_norm.{part}"
            # per head [q, k, v] rows ([h, 3, d]): the grouped layout with one group per head
            rules[_LAYER + f"self_attention.query_key_value.{part}"] = Rule(f"layers.{{i}}.attn.qkv.{part}",
                                                                           transform=ungroup_qkv)
            rules[_LAYER + f"self_attention.dense.{part}"] = f"layers.{{i}}.attn.o_proj.{part}"
            rules[_LAYER + f"mlp.dense_h_to_4h.{part}"] = f"layers.{{i}}.mlp.up.{part}"
            rules[_LAYER + f"mlp.dense_4h_to_h.{part}"] = f"layers.{{i}}.mlp.down.{part}"
        return rules

    def build_spec(self, hf: dict[str, Any]) -> DecoderSpec:
        if hf.get("apply_residual_connection_post_layernorm"):
            raise ValueError("bloom: apply_residual_connection_post_layernorm is not supported")
        hidden, heads = hf["hidden_size"], hf["n_head"]
        return DecoderSpec(
            vocab_size=hf["vocab_size"], hidden_size=hidden, num_layers=hf["n_layer"], num_heads=heads,
            num_kv_heads=heads, head_dim=hidden // heads, intermediate_size=4 * hidden,
            max_position_embeddings=hf.get("seq_length") or 2048, norm="layer",
            norm_eps=hf.get("layer_norm_epsilon", 1e-5), activation="gelu_new", gated_mlp=False,  # tanh GeLU
            qkv_bias=True, o_bias=True, mlp_bias=True, tie_word_embeddings=hf.get("tie_word_embeddings", True),
            rope=None, bos_token_id=hf.get("bos_token_id"), eos_token_ids=eos_ids_from_hf(hf),
            checkpoint_dtype=hf.get("dtype") or hf.get("torch_dtype"),
        )

    def build_model(self, ctx, kernels, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        return BloomModel(self.spec, ctx, kernels, device, dtype, DecoderParts(attention=AlibiAttention))
