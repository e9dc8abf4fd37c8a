"""Phi-2 as a declaration: partial rotary, attention and MLP in parallel on one LayerNorm, gelu_new,
biases on every projection, a final LayerNorm and a biased LM head."""
from __future__ import annotations

from typing import Any

from mii_core.model.hf_common import eos_ids_from_hf, partial_rope_spec
from mii_core.model.policy import ArchitecturePolicy
from mii_core.model.spec import DecoderSpec
from mii_core.model.weight_rules import module_rules

_LAYER = "model.layers.{i}."
_DEFAULT_PARTIAL_ROTARY = 0.5  # what HF's PhiConfig assumes when a config leaves it out


class PhiPolicy(ArchitecturePolicy):
    checkpoint_prefix = "model."
    weight_rules = {
        "model.embed_tokens.weight": "embed.weight",
        **module_rules({"model.final_layernorm": "final_norm"}),
        "lm_head.weight": "lm_head.weight",
        "lm_head.bias": "lm_head_bias",
        **module_rules(prefix=_LAYER, modules={
            "input_layernorm": "layers.{i}.attn_norm",
            **{f"self_attn.{name}_proj": ("layers.{i}.attn.qkv", name) for name in ("q", "k", "v")},
            "self_attn.dense": "layers.{i}.attn.o_proj",
            "mlp.fc1": "layers.{i}.mlp.up", "mlp.fc2": "layers.{i}.mlp.down",
        }),
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

