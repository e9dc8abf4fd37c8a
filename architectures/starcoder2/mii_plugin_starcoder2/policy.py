"""StarCoder2 as a declaration: HF's common decoder layout with LayerNorms (biased, ``norm_epsilon``),
grouped-query attention, a sliding window over the last ``sliding_window`` keys in every layer (full
attention when null), a plain (non-gated) ``c_fc`` → GELU → ``c_proj`` MLP, biases on every projection
when ``use_bias``, and a head tied to the embeddings unless ``tie_word_embeddings`` is false."""
from __future__ import annotations

from typing import Any

from mii_core.model.hf_common import LAYER, attention_rules, decoder_spec
from mii_core.model.policy import ArchitecturePolicy
from mii_core.model.spec import DecoderSpec
from mii_core.model.weight_rules import module_rules

_DEFAULT_ACT = "gelu_pytorch_tanh"  # Starcoder2Config's default (decoder_spec's is Llama's silu)


class Starcoder2Policy(ArchitecturePolicy):
    weight_rules = {
        "model.embed_tokens.weight": "embed.weight",
        **attention_rules(),  # q/k/v/o with their biases (skipped by the spec when use_bias is false)
        **module_rules(prefix=LAYER, modules={
            "input_layernorm": "layers.{i}.attn_norm", "post_attention_layernorm": "layers.{i}.mlp_norm",
            "mlp.c_fc": "layers.{i}.mlp.up", "mlp.c_proj": "layers.{i}.mlp.down"}),
        **module_rules({"model.norm": "final_norm"}),
        "lm_head.weight": "lm_head.weight",  # skipped while tied
    }

    def build_spec(self, hf: dict[str, Any]) -> DecoderSpec:
        bias = hf.get("use_bias", True)
        return decoder_spec(
            {"hidden_act": _DEFAULT_ACT, **hf}, norm="layer", norm_eps=hf.get("norm_epsilon", 1e-5),
            gated_mlp=False, qkv_bias=bias, o_bias=bias, mlp_bias=bias,
            tie_word_embeddings=hf.get("tie_word_embeddings", True), sliding_window=hf.get("sliding_window"),
        )
