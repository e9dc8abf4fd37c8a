"""GPT-NeoX as a declaration: LayerNorms with bias, attention and MLP in parallel on two LayerNorms
(``use_parallel_residual``; sequential pre-norm blocks when false), rotary on the first
``partial_rotary_factor`` (``rotary_pct``) of each head, a fused ``query_key_value`` stored per head as
[q | k | v] (``ungroup_qkv`` reorders it), a plain biased MLP, and an untied ``embed_out`` head."""
from __future__ import annotations

from typing import Any

from mii_core.model.hf_common import eos_ids_from_hf, megatron_layer_rules, partial_rope_spec, plain_activation
from mii_core.model.policy import ArchitecturePolicy
from mii_core.model.spec import DecoderSpec
from mii_core.model.weight_rules import module_rules

_LAYER = "gpt_neox.layers.{i}."
# HF's defaults when a config leaves them out (GPTNeoXConfig's rotary_pct, rotary_emb_base)
_DEFAULT_ROTARY_PCT, _DEFAULT_ROTARY_BASE = 0.25, 10000.0


class GPTNeoXPolicy(ArchitecturePolicy):
    checkpoint_prefix = "gpt_neox."  # checkpoints saved from GPTNeoXModel leave it out
    # older checkpoints carry the causal-mask buffers
    ignored_weights = ArchitecturePolicy.ignored_weights + (r".*\.attention\.(masked_)?bias$",)
    weight_rules = (
        module_rules({"gpt_neox.embed_in": "embed", "embed_out": "lm_head"}, parts="weight")  # no biases
        | module_rules({"gpt_neox.final_layer_norm": "final_norm"})
        | module_rules({"input_layernorm": "layers.{i}.attn_norm", "post_attention_layernorm": "layers.{i}.mlp_norm"},
                       prefix=_LAYER)
        | megatron_layer_rules(_LAYER, attention="attention.")
    )

    def build_spec(self, hf: dict[str, Any]) -> DecoderSpec:
        hidden, heads = hf["hidden_size"], hf["num_attention_heads"]
        activation = plain_activation(hf, "hidden_act", "gelu")
        # the legacy names under the ones transformers v5 reads (a rope_parameters block wins over both)
        legacy = {"rope_theta": hf.get("rotary_emb_base", _DEFAULT_ROTARY_BASE),
                  "partial_rotary_factor": hf.get("rotary_pct", _DEFAULT_ROTARY_PCT)}
        bias = hf.get("attention_bias", True)
        return DecoderSpec(
            vocab_size=hf["vocab_size"], hidden_size=hidden, num_layers=hf["num_hidden_layers"],
            num_heads=heads, num_kv_heads=heads, head_dim=hidden // heads,
            intermediate_size=hf["intermediate_size"], max_position_embeddings=hf.get("max_position_embeddings", 2048),
            layout="parallel" if hf.get("use_parallel_residual", True) else "sequential", parallel_norms=2,
            norm="layer", norm_eps=hf.get("layer_norm_eps", 1e-5), activation=activation, gated_mlp=False,
            qkv_bias=bias, o_bias=bias, mlp_bias=True, tie_word_embeddings=hf.get("tie_word_embeddings", False),
            rope=partial_rope_spec({**legacy, **hf}, hidden // heads, _DEFAULT_ROTARY_PCT),
            bos_token_id=hf.get("bos_token_id"), eos_token_ids=eos_ids_from_hf(hf),
            checkpoint_dtype=hf.get("dtype") or hf.get("torch_dtype"),
        )
