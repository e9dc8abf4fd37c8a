"""MPT as a declaration: ALiBi instead of positions (slopes rounded as HF's ``build_mpt_alibi_tensor``), no
biases anywhere (LayerNorms included), q/k/v fused as [q | k | v] and optionally clamped to
``attn_config.clip_qkv``, an exact-GELU MLP 4 × d_model wide, and a head tied to the embeddings.

MPT's config.json holds its attention settings in an ``attn_config`` dict and, in llm-foundry's newer
exports, its MLP's in ``ffn_config``. HF's ``MptForCausalLM`` reads only a few of them and computes
the rest one fixed way; a setting that asks for something else is refused here, naming it, rather than
computed as HF would (differently from the model it describes) or as llm-foundry would (unchecked)."""
from __future__ import annotations

from typing import Any

import torch

from mii_core.model.decoder import DecoderModel
from mii_core.model.hf_common import eos_ids_from_hf
from mii_core.model.parts import DecoderParts
from mii_core.model.policy import ArchitecturePolicy
from mii_core.model.spec import DecoderSpec
from mii_core.model.weight_rules import module_rules
from mii_plugin_mpt.blocks import MptAttention
from mii_plugin_mpt.config_checks import check_supported

_LAYER = "transformer.blocks.{i}."
EXPANSION_RATIO = 4  # HF's MptMLP is 4 × d_model wide whatever the config says (refused otherwise)


class MptPolicy(ArchitecturePolicy):
    checkpoint_prefix = "transformer."
    # no biases: check_supported refuses no_bias false, and MPT's LayerNorms have none
    weight_rules = module_rules(parts="weight", modules={
        "transformer.wte": "embed", "transformer.norm_f": "final_norm",
        "lm_head": "lm_head",  # skipped while tied
        _LAYER + "norm_1": "layers.{i}.attn_norm", _LAYER + "norm_2": "layers.{i}.mlp_norm",
        _LAYER + "attn.Wqkv": "layers.{i}.attn.qkv",  # [q | k | v]: split on loading
        _LAYER + "attn.out_proj": "layers.{i}.attn.o_proj",
        _LAYER + "ffn.up_proj": "layers.{i}.mlp.up", _LAYER + "ffn.down_proj": "layers.{i}.mlp.down",
    })

    def build_spec(self, hf: dict[str, Any]) -> DecoderSpec:
        check_supported(hf, EXPANSION_RATIO)
        attn = hf.get("attn_config") or {}
        hidden, heads = hf["d_model"], hf["n_heads"]
        return DecoderSpec(
            vocab_size=hf["vocab_size"], hidden_size=hidden, num_layers=hf["n_layers"], num_heads=heads,
            num_kv_heads=heads, head_dim=hidden // heads, intermediate_size=EXPANSION_RATIO * hidden,
            # HF's ALiBi table is max_seq_len long: it cannot attend further
            max_position_embeddings=hf.get("max_seq_len", 2048),
            norm="layer", norm_bias=False, norm_eps=hf.get("layer_norm_epsilon", 1e-5),
            activation="gelu", gated_mlp=False, qkv_clip=attn.get("clip_qkv"),
            tie_word_embeddings=hf.get("tie_word_embeddings", True), rope=None,
            attention_scale=attn.get("softmax_scale"),  # None: 1/sqrt(head_dim), as HF
            bos_token_id=hf.get("bos_token_id"), eos_token_ids=eos_ids_from_hf(hf),
            checkpoint_dtype=hf.get("dtype") or hf.get("torch_dtype"),
        )

    def build_model(self, ctx, kernels, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        return DecoderModel(self.spec, ctx, kernels, device, dtype, DecoderParts(attention=MptAttention))
