"""Llama as a declaration: how its HF config reads, and where each checkpoint tensor goes."""
from __future__ import annotations

from typing import Any

from mii_core.model.policy import ArchitecturePolicy, eos_ids_from_hf, rope_spec_from_hf
from mii_core.model.spec import DecoderSpec

_LAYER = "model.layers.{i}."


class LlamaPolicy(ArchitecturePolicy):
    weight_rules = {
        "model.embed_tokens.weight": "embed.weight",
        _LAYER + "input_layernorm.weight": "layers.{i}.attn_norm.weight",
        _LAYER + "self_attn.q_proj.weight": ("layers.{i}.attn.qkv.weight", "q"),
        _LAYER + "self_attn.k_proj.weight": ("layers.{i}.attn.qkv.weight", "k"),
        _LAYER + "self_attn.v_proj.weight": ("layers.{i}.attn.qkv.weight", "v"),
        _LAYER + "self_attn.q_proj.bias": ("layers.{i}.attn.qkv.bias", "q"),
        _LAYER + "self_attn.k_proj.bias": ("layers.{i}.attn.qkv.bias", "k"),
        _LAYER + "self_attn.v_proj.bias": ("layers.{i}.attn.qkv.bias", "v"),
        _LAYER + "self_attn.o_proj.weight": "layers.{i}.attn.o_proj.weight",
        _LAYER + "self_attn.o_proj.bias": "layers.{i}.attn.o_proj.bias",
        _LAYER + "post_attention_layernorm.weight": "layers.{i}.mlp_norm.weight",
        _LAYER + "mlp.gate_proj.weight": ("layers.{i}.mlp.up.weight", "gate"),
        _LAYER + "mlp.up_proj.weight": ("layers.{i}.mlp.up.weight", "up"),
        _LAYER + "mlp.gate_proj.bias": ("layers.{i}.mlp.up.bias", "gate"),
        _LAYER + "mlp.up_proj.bias": ("layers.{i}.mlp.up.bias", "up"),
        _LAYER + "mlp.down_proj.weight": "layers.{i}.mlp.down.weight",
        _LAYER + "mlp.down_proj.bias": "layers.{i}.mlp.down.bias",
        "model.norm.weight": "final_norm.weight",
        "lm_head.weight": "lm_head.weight",
    }

    def build_spec(self, hf: dict[str, Any]) -> DecoderSpec:
        heads = hf["num_attention_heads"]
        attention_bias = hf.get("attention_bias", False)
        return DecoderSpec(
            vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
            num_heads=heads, num_kv_heads=hf.get("num_key_value_heads") or heads,
            head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
            intermediate_size=hf["intermediate_size"],
            max_position_embeddings=hf.get("max_position_embeddings", 2048),
            norm="rms", norm_eps=hf.get("rms_norm_eps", 1e-6), activation=hf.get("hidden_act", "silu"),
            gated_mlp=True, qkv_bias=attention_bias, o_bias=attention_bias, mlp_bias=hf.get("mlp_bias", False),
            tie_word_embeddings=hf.get("tie_word_embeddings", False), rope=rope_spec_from_hf(hf),
            bos_token_id=hf.get("bos_token_id"), eos_token_ids=eos_ids_from_hf(hf),
            checkpoint_dtype=hf.get("dtype") or hf.get("torch_dtype"),
        )
