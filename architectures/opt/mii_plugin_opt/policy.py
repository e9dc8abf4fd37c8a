"""OPT as a declaration: learned positions shifted by 2, ReLU, biases, LayerNorm before each block
(OPT-125m and most sizes) or after each residual add (OPT-350m, which also projects its 512-wide word
embeddings in and out of the 1024-wide decoder and has no final LayerNorm, as in HF)."""
from __future__ import annotations

from typing import Any

from mii_core.model.hf_common import eos_ids_from_hf
from mii_core.model.policy import ArchitecturePolicy
from mii_core.model.spec import DecoderSpec
from mii_core.model.weight_rules import module_rules

_DECODER = "model.decoder."
_LAYER = _DECODER + "layers.{i}."
_POSITION_OFFSET = 2  # OPT's learned position table starts two rows in (fairseq's padding legacy)
_LAYER_NORM_EPS = 1e-5  # HF builds OPT's LayerNorms with torch's default eps; configs carry none


class OPTPolicy(ArchitecturePolicy):
    checkpoint_prefix = "model."  # facebook/opt-* checkpoints were saved from OPTModel: "decoder.*"
    weight_rules = {
        _DECODER + "embed_tokens.weight": "embed.weight",
        _DECODER + "embed_positions.weight": "positions.weight",
        _DECODER + "project_in.weight": "project_in.weight",
        _DECODER + "project_out.weight": "project_out.weight",
        **module_rules({_DECODER + "final_layer_norm": "final_norm"}),
        **module_rules(prefix=_LAYER, modules={
            "self_attn_layer_norm": "layers.{i}.attn_norm", "final_layer_norm": "layers.{i}.mlp_norm",
            **{f"self_attn.{name}_proj": ("layers.{i}.attn.qkv", name) for name in ("q", "k", "v")},
            "self_attn.out_proj": "layers.{i}.attn.o_proj", "fc1": "layers.{i}.mlp.up", "fc2": "layers.{i}.mlp.down",
        }),
        "lm_head.weight": "lm_head.weight",
    }

    def build_spec(self, hf: dict[str, Any]) -> DecoderSpec:
        if hf.get("layer_norm_elementwise_affine", True) is False:
            raise ValueError("opt: \"layer_norm_elementwise_affine\": false (LayerNorms without weight and "
                             "bias) is not supported")
        hidden, heads = hf["hidden_size"], hf["num_attention_heads"]
        norm_before = hf.get("do_layer_norm_before", True)
        bias = hf.get("enable_bias", True)
        return DecoderSpec(
            vocab_size=hf["vocab_size"], hidden_size=hidden, num_layers=hf["num_hidden_layers"],
            num_heads=heads, num_kv_heads=heads, head_dim=hidden // heads, intermediate_size=hf["ffn_dim"],
            max_position_embeddings=hf.get("max_position_embeddings", 2048),
            layout="sequential" if norm_before else "post_norm", norm="layer", norm_eps=_LAYER_NORM_EPS,
            final_norm=norm_before and not hf.get("_remove_final_layer_norm", False),
            activation=hf.get("activation_function", "relu"), gated_mlp=False,
            qkv_bias=bias, o_bias=bias, mlp_bias=bias, tie_word_embeddings=hf.get("tie_word_embeddings", True),
            rope=None, learned_positions=True, learned_position_offset=_POSITION_OFFSET,
            embed_dim=hf.get("word_embed_proj_dim") or hidden,
            bos_token_id=hf.get("bos_token_id"), eos_token_ids=eos_ids_from_hf(hf),
            checkpoint_dtype=hf.get("dtype") or hf.get("torch_dtype"),
        )
