"""GPT-J as a declaration: attention and MLP in parallel under one LayerNorm (``ln_1``), rotary on the
first ``rotary_dim`` features of each head in GPT-J's interleaved rotate-every-two layout (loaded as the
rotate-half layout by permuting q/k rows, see ``rotary_pairs_to_halves``), unbiased q/k/v/out
projections, a biased ``fc_in`` / ``fc_out`` MLP, and an untied LM head with a bias."""
from __future__ import annotations

from typing import Any

from mii_core.model.hf_common import eos_ids_from_hf, plain_activation
from mii_core.model.policy import ArchitecturePolicy
from mii_core.model.spec import DecoderSpec, RopeSpec
from mii_core.model.weight_rules import Rule, module_rules, rotary_pairs_to_halves

_LAYER = "transformer.h.{i}."
# GPTJConfig's defaults; GPT-J's rotary base is fixed in its modeling code (no config field)
_DEFAULT_ROTARY_DIM, _ROTARY_BASE = 64, 10000.0


class GPTJPolicy(ArchitecturePolicy):
    checkpoint_prefix = "transformer."  # checkpoints saved from GPTJModel leave it out
    # older checkpoints carry the causal-mask buffers
    ignored_weights = ArchitecturePolicy.ignored_weights + (r".*\.attn\.(masked_)?bias$",)
    weight_rules = {
        "transformer.wte.weight": "embed.weight",
        **module_rules({"ln_1": "layers.{i}.attn_norm", "mlp.fc_in": "layers.{i}.mlp.up",
                        "mlp.fc_out": "layers.{i}.mlp.down"}, prefix=_LAYER),
        # attention has no biases; q and k rows turned from interleaved pairs to halves: the same scores,
        # the core's rotary op
        **module_rules(parts="weight", prefix=_LAYER, modules={
            "attn.q_proj": Rule("layers.{i}.attn.qkv", "q", transform=rotary_pairs_to_halves),
            "attn.k_proj": Rule("layers.{i}.attn.qkv", "k", transform=rotary_pairs_to_halves),
            "attn.v_proj": ("layers.{i}.attn.qkv", "v"), "attn.out_proj": "layers.{i}.attn.o_proj",
        }),
        **module_rules({"transformer.ln_f": "final_norm"}),
        "lm_head.weight": "lm_head.weight",
        "lm_head.bias": "lm_head_bias",
    }

    def build_spec(self, hf: dict[str, Any]) -> DecoderSpec:
        hidden, heads = hf["n_embd"], hf["n_head"]
        return DecoderSpec(
            vocab_size=hf["vocab_size"], hidden_size=hidden, num_layers=hf["n_layer"],
            num_heads=heads, num_kv_heads=heads, head_dim=hidden // heads,
            intermediate_size=hf.get("n_inner") or 4 * hidden, max_position_embeddings=hf.get("n_positions", 2048),
            layout="parallel", parallel_norms=1, norm="layer", norm_eps=hf.get("layer_norm_epsilon", 1e-5),
            activation=plain_activation(hf, "activation_function", "gelu_new"), gated_mlp=False,
            mlp_bias=True, lm_head_bias=True, tie_word_embeddings=hf.get("tie_word_embeddings", False),
            rope=RopeSpec(theta=_ROTARY_BASE, rotary_dim=_rotary_dim(hf, hidden // heads)),
            bos_token_id=hf.get("bos_token_id"), eos_token_ids=eos_ids_from_hf(hf),
            checkpoint_dtype=hf.get("dtype") or hf.get("torch_dtype"),
        )


def _rotary_dim(hf: dict[str, Any], head_dim: int) -> int:
    """GPT-J rotates the first ``rotary_dim`` features of each head. Null means the whole hidden size in
    HF's code, which only works with one head; anything beyond a head, or odd, fails in HF's forward."""
    rotary_dim = hf.get("rotary_dim", _DEFAULT_ROTARY_DIM)
    if rotary_dim is None and hf["n_embd"] == head_dim:
        return head_dim
    if rotary_dim is None or rotary_dim > head_dim or rotary_dim % 2 or rotary_dim < 2:
        raise ValueError(f"gptj: rotary_dim {rotary_dim} is not supported: it must be an even number of "
                         f"features from 2 up to the head size {head_dim}")
    return rotary_dim
