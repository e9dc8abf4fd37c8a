"""GPT-2 as a declaration: how its config.json reads into a DecoderSpec, and where each tensor goes.
Every config field HF's GPT-2 reads is honoured or refused: ``reorder_and_upcast_attn`` (scores computed in
float32, the scale folded in) changes rounding only, and the GPU attention kernel keeps its scores in float32
in every dtype already; ``scale_attn_by_inverse_layer_idx`` is refused."""
from __future__ import annotations

from typing import Any

from mii_core.model.hf_common import eos_ids_from_hf, plain_activation
from mii_core.model.policy import ArchitecturePolicy
from mii_core.model.spec import DecoderSpec
from mii_core.model.weight_rules import Rule

LAYER = "transformer.h.{i}."


def conv1d(target: str) -> Rule:
    """GPT-2's Conv1D layers store their weight as [in, out]; the engine's linear layers hold [out, in]."""
    return Rule(target, transpose=True)


class GPT2Policy(ArchitecturePolicy):
    # the original hub files name tensors "h.0.attn.c_attn.weight", newer ones "transformer.h.0...."
    checkpoint_prefix = "transformer."
    weight_rules = {
        "transformer.wte.weight": "embed.weight",
        "transformer.wpe.weight": "positions.weight",
        LAYER + "ln_1.weight": "layers.{i}.attn_norm.weight",
        LAYER + "ln_1.bias": "layers.{i}.attn_norm.bias",
        LAYER + "attn.c_attn.weight": conv1d("layers.{i}.attn.qkv.weight"),  # [q | k | v]: split on loading
        LAYER + "attn.c_attn.bias": "layers.{i}.attn.qkv.bias",
        LAYER + "attn.c_proj.weight": conv1d("layers.{i}.attn.o_proj.weight"),
        LAYER + "attn.c_proj.bias": "layers.{i}.attn.o_proj.bias",
        LAYER + "ln_2.weight": "layers.{i}.mlp_norm.weight",
        LAYER + "ln_2.bias": "layers.{i}.mlp_norm.bias",
        LAYER + "mlp.c_fc.weight": conv1d("layers.{i}.mlp.up.weight"),
        LAYER + "mlp.c_fc.bias": "layers.{i}.mlp.up.bias",
        LAYER + "mlp.c_proj.weight": conv1d("layers.{i}.mlp.down.weight"),
        LAYER + "mlp.c_proj.bias": "layers.{i}.mlp.down.bias",
        "transformer.ln_f.weight": "final_norm.weight",
        "transformer.ln_f.bias": "final_norm.bias",
        "lm_head.weight": "lm_head.weight",  # skipped by the core while the head is tied to wte
    }

    def build_spec(self, hf: dict[str, Any]) -> DecoderSpec:
        if hf.get("scale_attn_by_inverse_layer_idx"):
            raise ValueError("model_type 'gpt2': scale_attn_by_inverse_layer_idx is not supported")
        hidden, heads = hf["n_embd"], hf["n_head"]
        return DecoderSpec(
            vocab_size=hf["vocab_size"], hidden_size=hidden, num_layers=hf["n_layer"],
            num_heads=heads, num_kv_heads=heads, head_dim=hidden // heads,
            intermediate_size=hf.get("n_inner") or 4 * hidden, max_position_embeddings=hf["n_positions"],
            norm="layer", norm_eps=hf.get("layer_norm_epsilon", 1e-5),
            gated_mlp=False, activation=plain_activation(hf, "activation_function", "gelu_new"),
            qkv_bias=True, o_bias=True, mlp_bias=True, tie_word_embeddings=hf.get("tie_word_embeddings", True),
            rope=None, learned_positions=True,  # a learned table of n_positions rows (wpe), no rotary
            attention_scale=None if hf.get("scale_attn_weights", True) else 1.0,
            bos_token_id=hf.get("bos_token_id"), eos_token_ids=eos_ids_from_hf(hf),
            checkpoint_dtype=hf.get("dtype") or hf.get("torch_dtype"),  # transformers v5 / v4 names
        )
