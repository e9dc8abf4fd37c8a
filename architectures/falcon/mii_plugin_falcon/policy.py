"""Falcon as a declaration: how its HF config reads, and where each checkpoint tensor goes.

Three layouts share one checkpoint format:
- falcon-7b: multi-query (one KV head), attention and MLP in parallel on one LayerNorm (``input_layernorm``);
- falcon-40b/180b (``new_decoder_architecture``): ``num_kv_heads`` grouped KV heads, attention and MLP in
  parallel on two LayerNorms (``ln_attn``, ``ln_mlp``; one with ``num_ln_in_parallel_attn=1``, Falcon2);
- falcon-rw (``parallel_attn=false``): sequential pre-norm blocks, one KV head per query head.
The fused ``query_key_value`` tensor stores each KV group's query heads, then its key and value head;
``ungroup_qkv`` reorders it into [q | k | v].
"""
from __future__ import annotations

from typing import Any

from mii_core.model.hf_common import eos_ids_from_hf, megatron_layer_rules, rope_spec_from_hf
from mii_core.model.policy import ArchitecturePolicy
from mii_core.model.spec import DecoderSpec
from mii_core.model.weight_rules import module_rules

_LAYER = "transformer.h.{i}."
# HF's names for the layer norms, by (layout, norms before the parallel attention + MLP)
_NORM_NAMES = {("parallel", 1): ("input_layernorm", None), ("parallel", 2): ("ln_attn", "ln_mlp"),
               ("sequential", 1): ("input_layernorm", "post_attention_layernorm")}


class FalconPolicy(ArchitecturePolicy):
    checkpoint_prefix = "transformer."  # checkpoints saved from FalconModel leave it out

    @property
    def weight_rules(self) -> dict:
        attn_norm, mlp_norm = _NORM_NAMES[(self.spec.layout, self.spec.parallel_norms)]
        norms = {attn_norm: "layers.{i}.attn_norm"} | ({mlp_norm: "layers.{i}.mlp_norm"} if mlp_norm else {})
        return {
            "transformer.word_embeddings.weight": "embed.weight",
            **module_rules({"transformer.ln_f": "final_norm"}),
            "lm_head.weight": "lm_head.weight",
            **module_rules(norms, prefix=_LAYER),
            **megatron_layer_rules(_LAYER, attention="self_attention."),
        }

    def build_spec(self, hf: dict[str, Any]) -> DecoderSpec:
        if hf.get("alibi"):
            raise ValueError("falcon: alibi position biases (\"alibi\": true, used by falcon-rw-1b/7b) are not "
                             "supported; only rotary Falcon checkpoints (\"alibi\": false) can be served")
        hidden = hf["n_embed"] if "n_embed" in hf else hf["hidden_size"]  # n_embed: older configs; HF prefers it
        heads = hf["num_attention_heads"]
        layout, norms = _layout(hf)
        bias = bool(hf.get("bias", False))
        return DecoderSpec(
            vocab_size=hf["vocab_size"], hidden_size=hidden, num_layers=hf["num_hidden_layers"],
            num_heads=heads, num_kv_heads=_kv_heads(hf, heads), head_dim=hidden // heads,
            intermediate_size=hf.get("ffn_hidden_size") or 4 * hidden,
            max_position_embeddings=hf.get("max_position_embeddings", 2048),
            layout=layout, parallel_norms=norms, norm="layer", norm_eps=hf.get("layer_norm_epsilon", 1e-5),
            activation=hf.get("activation", "gelu"), gated_mlp=False, qkv_bias=bias, o_bias=bias, mlp_bias=bias,
            tie_word_embeddings=hf.get("tie_word_embeddings", True), rope=rope_spec_from_hf(hf),
            bos_token_id=hf.get("bos_token_id"), eos_token_ids=eos_ids_from_hf(hf),
            checkpoint_dtype=hf.get("dtype") or hf.get("torch_dtype"),
        )


def _kv_heads(hf: dict[str, Any], heads: int) -> int:
    if hf.get("new_decoder_architecture"):
        return hf.get("num_kv_heads") or heads
    return 1 if hf.get("multi_query", True) else heads  # falcon-7b is multi-query; falcon-rw is not


def _layout(hf: dict[str, Any]) -> tuple[str, int]:
    """(layout, parallel_norms), refusing the combinations HF's FalconDecoderLayer cannot run either."""
    parallel, norms = hf.get("parallel_attn", True), hf.get("num_ln_in_parallel_attn")
    if hf.get("new_decoder_architecture"):
        if not parallel:
            raise ValueError("falcon: new_decoder_architecture with \"parallel_attn\": false is not a Falcon "
                             "layout (HF transformers cannot run it either); set parallel_attn to true")
        if norms not in (None, 1, 2):
            raise ValueError(f"falcon: \"num_ln_in_parallel_attn\" must be 1 or 2, got {norms}")
        return "parallel", norms or 2
    if not parallel:
        return "sequential", 1  # num_ln_in_parallel_attn does not apply
    if norms not in (None, 1):
        raise ValueError(f"falcon: \"num_ln_in_parallel_attn\": {norms} needs \"new_decoder_architecture\": "
                         "true; the original parallel Falcon block has one LayerNorm")
    return "parallel", 1
