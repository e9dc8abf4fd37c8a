"""Bloom as a declaration: ALiBi instead of positions (the core's ``AlibiAttention``), a LayerNorm on the
word embeddings (``BloomModel``), q/k/v fused per head ([q, k, v] rows of each head: ``ungroup_qkv``),
biased LayerNorms and projections, a tanh-GELU MLP 4 × hidden wide, and a head tied to the embeddings."""
from __future__ import annotations

from typing import Any

import torch

from mii_core.model.alibi import AlibiAttention
from mii_core.model.hf_common import eos_ids_from_hf, megatron_layer_rules
from mii_core.model.parts import DecoderParts
from mii_core.model.policy import ArchitecturePolicy
from mii_core.model.spec import DecoderSpec
from mii_core.model.weight_rules import module_rules
from mii_plugin_bloom.blocks import BloomModel

_LAYER = "transformer.h.{i}."
_DEFAULT_SEQ_LENGTH = 2048  # Bloom's training context; ALiBi itself has no table that ends there


class BloomPolicy(ArchitecturePolicy):
    checkpoint_prefix = "transformer."  # bigscience/bloom-* checkpoints were saved from BloomModel: no prefix
    weight_rules = {
        "transformer.word_embeddings.weight": "embed.weight",
        "lm_head.weight": "lm_head.weight",  # skipped while tied
        **module_rules({"transformer.word_embeddings_layernorm": "embed_norm", "transformer.ln_f": "final_norm"}),
        **module_rules({"input_layernorm": "layers.{i}.attn_norm", "post_attention_layernorm": "layers.{i}.mlp_norm"},
                       prefix=_LAYER),
        **megatron_layer_rules(_LAYER, attention="self_attention."),
    }

    def build_spec(self, hf: dict[str, Any]) -> DecoderSpec:
        if hf.get("apply_residual_connection_post_layernorm"):
            raise ValueError("bloom: apply_residual_connection_post_layernorm (the residual taken after the "
                             "LayerNorm) is not supported; no released Bloom checkpoint sets it")
        # hub configs name the sizes as BloomConfig's __post_init__ and attribute_map accept them
        # (bloom-560m: n_embed, num_attention_heads); pretraining_tp / slow_but_exact only reorder HF's sums
        hidden = hf.get("n_embed") or hf["hidden_size"]
        heads = hf.get("n_head") or hf["num_attention_heads"]
        return DecoderSpec(
            vocab_size=hf["vocab_size"], hidden_size=hidden, num_layers=hf.get("n_layer") or hf["num_hidden_layers"],
            num_heads=heads, num_kv_heads=heads, head_dim=hidden // heads, intermediate_size=4 * hidden,
            max_position_embeddings=hf.get("seq_length") or _DEFAULT_SEQ_LENGTH, norm="layer",
            norm_eps=hf.get("layer_norm_epsilon", 1e-5), activation="gelu_new", gated_mlp=False,  # tanh GELU
            qkv_bias=True, o_bias=True, mlp_bias=True, tie_word_embeddings=hf.get("tie_word_embeddings", True),
            rope=None, bos_token_id=hf.get("bos_token_id"), eos_token_ids=eos_ids_from_hf(hf),
            checkpoint_dtype=hf.get("dtype") or hf.get("torch_dtype"),
        )

    def build_model(self, ctx, kernels, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        return BloomModel(self.spec, ctx, kernels, device, dtype, DecoderParts(attention=AlibiAttention))
