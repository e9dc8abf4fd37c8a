"""GPT-Neo as a declaration: GPT-2's pre-norm blocks and learned positions, with layers alternating between
global attention and local attention over the last ``window_size`` tokens (``attention_types``), no
1/sqrt(head_dim) scaling of the scores (as HF's GPT-Neo), unbiased q/k/v, a biased output projection and
MLP (plain ``nn.Linear`` layers, stored [out, in]), and an LM head tied to the embedding."""
from __future__ import annotations

from typing import Any, Optional

from mii_core.model.hf_common import eos_ids_from_hf, plain_activation
from mii_core.model.policy import ArchitecturePolicy
from mii_core.model.spec import DecoderSpec
from mii_core.model.weight_rules import module_rules

_LAYER = "transformer.h.{i}."
# GPTNeoConfig's defaults when a config leaves them out
_DEFAULT_ATTENTION_TYPES = [[["global", "local"], 12]]
_DEFAULT_WINDOW = 256


class GPTNeoPolicy(ArchitecturePolicy):
    checkpoint_prefix = "transformer."  # checkpoints saved from GPTNeoModel leave it out
    # older checkpoints carry the attention-mask buffers
    ignored_weights = ArchitecturePolicy.ignored_weights + (r".*\.attn\.attention\.(masked_)?bias$",)
    weight_rules = {
        "transformer.wte.weight": "embed.weight",
        "transformer.wpe.weight": "positions.weight",
        # q, k and v have no biases; the output projection has one
        **module_rules(parts="weight", prefix=_LAYER + "attn.attention.", modules={
            "q_proj": ("layers.{i}.attn.qkv", "q"), "k_proj": ("layers.{i}.attn.qkv", "k"),
            "v_proj": ("layers.{i}.attn.qkv", "v")}),
        **module_rules(prefix=_LAYER, modules={
            "ln_1": "layers.{i}.attn_norm", "attn.attention.out_proj": "layers.{i}.attn.o_proj",
            "ln_2": "layers.{i}.mlp_norm", "mlp.c_fc": "layers.{i}.mlp.up", "mlp.c_proj": "layers.{i}.mlp.down"}),
        **module_rules({"transformer.ln_f": "final_norm"}),
        "lm_head.weight": "lm_head.weight",  # skipped by the core while the head is tied to wte
    }

    def build_spec(self, hf: dict[str, Any]) -> DecoderSpec:
        hidden, heads = hf["hidden_size"], hf["num_heads"]
        return DecoderSpec(
            vocab_size=hf["vocab_size"], hidden_size=hidden, num_layers=hf["num_layers"],
            num_heads=heads, num_kv_heads=heads, head_dim=hidden // heads,
            intermediate_size=hf.get("intermediate_size") or 4 * hidden,
            max_position_embeddings=hf.get("max_position_embeddings", 2048),
            norm="layer", norm_eps=hf.get("layer_norm_epsilon", 1e-5),
            activation=plain_activation(hf, "activation_function", "gelu_new"), gated_mlp=False,
            o_bias=True, mlp_bias=True, tie_word_embeddings=hf.get("tie_word_embeddings", True),
            rope=None, learned_positions=True,
            attention_scale=1.0,  # HF's GPT-Neo never scales q·k by 1/sqrt(head_dim)
            layer_windows=_layer_windows(hf),
            bos_token_id=hf.get("bos_token_id"), eos_token_ids=eos_ids_from_hf(hf),
            checkpoint_dtype=hf.get("dtype") or hf.get("torch_dtype"),
        )


def _layer_windows(hf: dict[str, Any]) -> tuple[Optional[int], ...]:
    """Each layer's window as GPTNeoConfig expands ``attention_types`` ([[["global", "local"], 12]]: the
    pattern repeated 12 times) into ``attention_layers``: a "local" layer sees the last ``window_size``
    keys (HF's mask keeps key j for query i when i - j < window_size), a "global" one all of them.
    ``attention_layers`` in a config.json is HF's own expansion, which HF recomputes; so do we."""
    layers, attention_types = hf["num_layers"], hf.get("attention_types") or _DEFAULT_ATTENTION_TYPES
    try:
        types = [kind for pattern, repeats in attention_types for _ in range(repeats) for kind in pattern]
    except (TypeError, ValueError):
        raise ValueError(f"gpt_neo: attention_types {attention_types!r} must be a list of [[types...], repeats] "
                         "pairs, as [[['global', 'local'], 12]]; fix config.json") from None
    if len(types) != layers or any(kind not in ("global", "local") for kind in types):
        raise ValueError(f"gpt_neo: attention_types expands to {types}, which must name {layers} layers "
                         "(num_layers), each 'global' or 'local'; fix config.json")
    window = hf.get("window_size", _DEFAULT_WINDOW)
    if "local" in types and (not isinstance(window, int) or window < 1):
        raise ValueError(f"gpt_neo: window_size {window!r} must be a positive number of tokens for the "
                         "local attention layers; fix config.json")
    return tuple(window if kind == "local" else None for kind in types)
