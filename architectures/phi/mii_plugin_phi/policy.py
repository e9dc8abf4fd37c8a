"""Phi-2 as a declaration: partial rotary, attention and MLP in parallel on one LayerNorm, gelu_new,
biases on every projection, a final LayerNorm and a biased LM head."""
from __future__ import annotations

from typing import Any

from mii_core.model.hf_common import eos_ids_from_hf, partial_rope_spec
from mii_core.model.policy import ArchitecturePolicy
from mii_core.model.spec import DecoderSpec

_LAYER = "model.layers.{i}."
_DEFAULT_PARTIAL_ROTARY = 0.5  # what HF's PhiConfig assumes when a config leaves it out


class PhiPolicy(ArchitecturePolicy):
    checkpoint_prefix = "model."
    weight_rules = {
        "model.embed_tokens.weight": "embed.weight",
        "model.final_layernorm.weight": "final_norm.weight",
        "model.final_layernorm.bias": "final_norm.bias",
        "lm_head.weight": "lm_head.weight",
        "lm_head.bias": "lm_head_bias",
        **{_LAYER + f"input_layernorm.{part}": f"layers.{{i}}.attn_norm.{part}" for part in ("weight", "bias")},
        **{_LAYER + f"self_attn.{name}_proj.{part}": (f"layers.{{i}}.attn.qkv.{part}", name)
           for name in ("q", "k", "v") for part in ("weight", "bias")},
        **{_LAYER + f"self_attn.dense.{part}": f"layers.{{i}}.attn.o_proj.{part}" for part in ("weight", "bias")},
        **{_LAYER + f"mlp.fc1.{part}": f"layers.{{i}}.mlp.up.{part}" for part in ("weight", "bias")},
        **{_LAYER + f"mlp.fc2.{part}": f"layers.{{i}}.mlp.down.{part}" for part in ("weight", "bias")},
    }

    def build_spec(self, hf: dict[str, Any]) -> DecoderSpec:
        if hf.get("qk_layernorm"):
            raise ValueError("phi: \"qk_layernorm\": true (a LayerNorm on each query and key head) is not "
                             "supported; Phi-1/1.5/2 checkpoints set it to false")
        heads = hf["num_attention_heads"]
        head_dim = hf.get("head_dim") or hf["hidden_size"] // heads
        return DecoderSpec(
            vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
            num_heads=heads, num_kv_heads=hf.get("num_key_value_heads") or heads, head_dim=head_dim,
            intermediate_size=hf["intermediate_size"],
            max_position_embeddings=hf.get("max_position_embeddings", 2048),
            layout="parallel", parallel_norms=1, norm="layer", norm_eps=hf.get("layer_norm_eps", 1e-5),
            activation=hf.get("hidden_act", "gelu_new"), gated_mlp=False,
            qkv_bias=True, o_bias=True, mlp_bias=True, lm_head_bias=True,
            tie_word_embeddings=hf.get("tie_word_embeddings", False),
            rope=partial_rope_spec(hf, head_dim, _DEFAULT_PARTIAL_ROTARY),
            bos_token_id=hf.get("bos_token_id"), eos_token_ids=eos_ids_from_hf(hf),
            checkpoint_dtype=hf.get("dtype") or hf.get("torch_dtype"),
        )

