"""What most HF decoder families share, so that their plugins declare only what differs.

Checkpoint names: ``model.embed_tokens``, per layer ``model.layers.{i}.`` + ``input_layernorm``,
``self_attn.{q,k,v,o}_proj``, ``post_attention_layernorm``, ``mlp.{gate,up,down}_proj``, then
``model.norm`` and ``lm_head``. Config keys: ``hidden_size``, ``num_hidden_layers``,
``num_attention_heads``, ``num_key_value_heads``, ``head_dim``, ``intermediate_size``, ``rms_norm_eps``,
``hidden_act``, ``tie_word_embeddings``, rope settings, ``attention_bias`` / ``mlp_bias``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import torch

from mii_core.model.activations import GATED_ACTIVATIONS, PLAIN_ACTIVATIONS
from mii_core.model.rotary import RotaryEmbedding
from mii_core.model.spec import DecoderSpec, MoESpec, RopeSpec
from mii_core.model.weight_rules import Rule, WeightRule, module_rules, ungroup_qkv


def rope_spec_from_hf(hf_config: dict[str, Any]) -> RopeSpec:
    """HF keeps rope settings in ``rope_scaling`` + ``rope_theta`` (v4) or ``rope_parameters`` (v5)."""
    params = dict(hf_config.get("rope_parameters") or hf_config.get("rope_scaling") or {})
    theta = params.pop("rope_theta", hf_config.get("rope_theta", 10000.0))
    rope_type = params.pop("rope_type", params.pop("type", "default"))
    return RopeSpec(theta=float(theta), rope_type=rope_type, params=params)


def partial_rope_spec(hf_config: dict[str, Any], head_dim: int, default_factor: float) -> RopeSpec:
    """Rotary on the first int(head_dim * partial_rotary_factor) features of each head (Phi, GPT-NeoX); the
    factor sits at the top of hub configs and inside ``rope_parameters`` in transformers v5's own."""
    rope = rope_spec_from_hf(hf_config)
    params = dict(rope.params)
    factor = params.pop("partial_rotary_factor", hf_config.get("partial_rotary_factor", default_factor))
    return dataclasses.replace(rope, rotary_dim=int(head_dim * factor), params=params)


def causal_only(hf_config: dict[str, Any]) -> None:
    """Refuses ``use_bidirectional_attention`` (HF's Gemmas read it; the engine generates causally)."""
    if hf_config.get("use_bidirectional_attention"):
        raise ValueError(f"{hf_config.get('model_type')}: use_bidirectional_attention (an encoder's attention) is "
                         "not supported: the engine generates causally; set it to false or null")


def plain_activation(hf_config: dict[str, Any], key: str, default: str) -> str:
    """The activation of a plain (ungated) MLP from ``hf_config[key]`` (``hidden_act``, GPT-2's
    ``activation_function``; ``default`` when absent or null); a ValueError naming the model type, the
    field and the supported names for one the core does not implement."""
    return _supported_activation(hf_config, key, hf_config.get(key) or default, PLAIN_ACTIVATIONS)


def _supported_activation(hf_config: dict[str, Any], key: str, activation: Any, supported: dict) -> str:
    if activation not in supported:
        raise ValueError(f"{hf_config.get('model_type')}: {key} '{activation}' is not supported "
                         f"(supported: {', '.join(supported)})")
    return activation


def hidden_activation(hf_config: dict[str, Any]) -> str:
    """The Gemma 2 / 3 configs' ``hidden_activation`` (their ``hidden_act`` is not read), checked against
    the gated MLP's activations."""
    activation = hf_config.get("hidden_activation") or "gelu_pytorch_tanh"
    return _supported_activation(hf_config, "hidden_activation", activation, GATED_ACTIVATIONS)


def eos_ids_from_hf(hf_config: dict[str, Any]) -> tuple[int, ...]:
    """``eos_token_id`` as a tuple: HF configs hold one id, a list, or none."""
    eos = hf_config.get("eos_token_id")
    if eos is None:
        return ()
    return tuple(eos) if isinstance(eos, (list, tuple)) else (int(eos),)


_LAYER_TYPES = ("full_attention", "sliding_attention")


def layer_windows(hf: dict[str, Any]) -> tuple[Optional[int], ...]:
    """Each layer's window from HF's sliding-window flags, as Qwen2Config / Qwen3Config derive
    ``layer_types`` and their attention reads them: with ``use_sliding_window`` the layers from
    ``max_window_layers`` on (or those ``layer_types`` marks "sliding_attention") see the last
    ``sliding_window`` keys, the others everything. Without it ``sliding_window`` is ignored, as in HF."""
    window = hf.get("sliding_window") if hf.get("use_sliding_window", False) else None
    types = hf.get("layer_types") or [
        "sliding_attention" if window is not None and i >= hf.get("max_window_layers", 28) else "full_attention"
        for i in range(hf["num_hidden_layers"])]
    return windows_of_layer_types(hf, types, window)


def windows_of_layer_types(hf: dict[str, Any], types: list[str], window: Optional[int]) -> tuple[Optional[int], ...]:
    """``window`` for each "sliding_attention" layer of ``types`` (HF's ``layer_types``), None for each
    "full_attention" one; a ValueError naming the model type for a list that does not fit the config."""
    model_type, layers = hf.get("model_type"), hf["num_hidden_layers"]
    if len(types) != layers or any(t not in _LAYER_TYPES for t in types):
        raise ValueError(f"{model_type}: layer_types {types} must name {layers} layers, each one of {_LAYER_TYPES}")
    if "sliding_attention" in types and window is None:
        raise ValueError(f"{model_type}: layer_types has sliding_attention layers but no window is set "
                         "(sliding_window null, or use_sliding_window false); fix config.json")
    return tuple(window if t == "sliding_attention" else None for t in types)


LAYER = "model.layers.{i}."


def attention_rules(prefix: str = LAYER + "self_attn.") -> dict[str, WeightRule]:
    """HF's ``{q,k,v,o}_proj`` under ``prefix``, weights and biases (a bias the spec does not ask for is skipped)."""
    qkv = "layers.{i}.attn.qkv"
    return module_rules({"q_proj": (qkv, "q"), "k_proj": (qkv, "k"), "v_proj": (qkv, "v"),
                         "o_proj": ("layers.{i}.attn.o_proj", None)}, prefix=prefix)


def megatron_layer_rules(prefix: str, attention: str) -> dict[str, WeightRule]:
    """A layer's projections under Megatron-LM's names, which GPT-NeoX, Bloom and Falcon keep (each with
    its own norms, and ``attention`` = its attention module's name + "."): ``{attention}query_key_value``
    (q, k, v per head group, reordered by :func:`ungroup_qkv`), ``{attention}dense``,
    ``mlp.dense_h_to_4h`` and ``mlp.dense_4h_to_h``, weights and biases."""
    return module_rules(prefix=prefix, modules={
        attention + "query_key_value": Rule("layers.{i}.attn.qkv", transform=ungroup_qkv),
        attention + "dense": "layers.{i}.attn.o_proj",
        "mlp.dense_h_to_4h": "layers.{i}.mlp.up", "mlp.dense_4h_to_h": "layers.{i}.mlp.down",
    })


def gated_mlp_rules(prefix: str = LAYER + "mlp.", target: str = "layers.{i}.mlp") -> dict[str, WeightRule]:
    """HF's ``gate_proj`` / ``up_proj`` / ``down_proj`` under ``prefix`` into the gated MLP at ``target``."""
    return module_rules({"gate_proj": (f"{target}.up", "gate"), "up_proj": (f"{target}.up", "up"),
                         "down_proj": (f"{target}.down", None)}, prefix=prefix)


def expert_rules(prefix: str = LAYER + "mlp.") -> dict[str, WeightRule]:
    """A mixture of experts as HF's Qwen-MoE / DeepSeek checkpoints hold it: the router ``gate``, one
    ``experts.{e}.{gate,up,down}_proj`` per expert (hub files), or transformers' stacked
    ``experts.gate_up_proj`` [E, 2F, H] and ``experts.down_proj`` [E, H, F]."""
    experts = "layers.{i}.mlp.experts."
    return {
        prefix + "gate.weight": "layers.{i}.mlp.router.weight",
        prefix + "experts.{e}.gate_proj.weight": (experts + "gate_up", "{e}.gate"),
        prefix + "experts.{e}.up_proj.weight": (experts + "gate_up", "{e}.up"),
        prefix + "experts.{e}.down_proj.weight": (experts + "down", "{e}"),
        prefix + "experts.gate_up_proj": experts + "gate_up",
        prefix + "experts.down_proj": experts + "down",
    }


def qwen_moe_spec(hf: dict[str, Any], **fields: Any) -> Optional[MoESpec]:
    """The experts of HF's Qwen-MoE configs (``num_experts`` or ``num_local_experts``, ``num_experts_per_tok``,
    ``norm_topk_prob``, ``moe_intermediate_size``), sparse on the layers HF's decoder layer makes sparse: those not in
    ``mlp_only_layers`` whose index + 1 is a multiple of ``decoder_sparse_step``; None when
    ``num_experts`` is 0 (every layer dense). ``fields`` add to the MoESpec (a shared expert)."""
    model_type, layers = hf.get("model_type"), hf["num_hidden_layers"]
    # transformers v5 writes Qwen3-MoE's count as num_local_experts (its alias of num_experts, which hub files use)
    experts = hf["num_local_experts"] if "num_local_experts" in hf else hf["num_experts"]
    per_token, step = hf["num_experts_per_tok"], hf.get("decoder_sparse_step", 1)
    if experts == 0:
        return None
    if not 0 < per_token <= experts:
        raise ValueError(f"{model_type}: num_experts_per_tok ({per_token}) must be between 1 and num_experts "
                         f"({experts}); fix config.json")
    if not isinstance(step, int) or step < 1:
        raise ValueError(f"{model_type}: decoder_sparse_step must be a positive integer, got {step!r}; fix config.json")
    dense_only = set(hf.get("mlp_only_layers") or ())
    dense = tuple(i for i in range(layers) if i in dense_only or (i + 1) % step)
    return MoESpec(num_experts=experts, experts_per_token=per_token, renormalize=bool(hf.get("norm_topk_prob", False)),
                   expert_intermediate_size=hf["moe_intermediate_size"], dense_layers=dense, **fields)


def decoder_rules(mlp: bool = True) -> dict[str, WeightRule]:
    """Every tensor of the common layout; ``mlp=False`` leaves the feed-forward to the plugin (MoE)."""
    return {
        "model.embed_tokens.weight": "embed.weight",
        LAYER + "input_layernorm.weight": "layers.{i}.attn_norm.weight",
        **attention_rules(),
        LAYER + "post_attention_layernorm.weight": "layers.{i}.mlp_norm.weight",
        **(gated_mlp_rules() if mlp else {}),
        "model.norm.weight": "final_norm.weight",
        "lm_head.weight": "lm_head.weight",
    }


def decoder_spec(hf: dict[str, Any], **fields: Any) -> DecoderSpec:
    """A pre-norm RMSNorm decoder with a gated MLP from the common config keys; ``fields`` override.
    Required keys are read as ``hf[...]``; an unsupported rope type or activation (``hidden_act``, checked
    against the plain MLP's activations when ``fields`` say ``gated_mlp=False``) is a ValueError naming it
    and the model type."""
    model_type = hf.get("model_type")
    heads = hf["num_attention_heads"]
    attention_bias = hf.get("attention_bias", False)
    supported = GATED_ACTIVATIONS if fields.get("gated_mlp", True) else PLAIN_ACTIVATIONS
    activation = _supported_activation(hf, "hidden_act", hf.get("hidden_act", "silu"), supported)
    spec = DecoderSpec(**{
        "vocab_size": hf["vocab_size"], "hidden_size": hf["hidden_size"], "num_layers": hf["num_hidden_layers"],
        "num_heads": heads, "num_kv_heads": hf.get("num_key_value_heads") or heads,
        "head_dim": hf.get("head_dim") or hf["hidden_size"] // heads,
        "intermediate_size": hf["intermediate_size"],
        "max_position_embeddings": hf.get("max_position_embeddings", 2048),
        "norm": "rms", "norm_eps": hf.get("rms_norm_eps", 1e-6), "activation": activation, "gated_mlp": True,
        "qkv_bias": attention_bias, "o_bias": attention_bias, "mlp_bias": hf.get("mlp_bias", False),
        "tie_word_embeddings": hf.get("tie_word_embeddings", False), "rope": rope_spec_from_hf(hf),
        "bos_token_id": hf.get("bos_token_id"), "eos_token_ids": eos_ids_from_hf(hf),
        "checkpoint_dtype": hf.get("dtype") or hf.get("torch_dtype"),
        **fields,
    })
    check_rope(spec, model_type)
    return spec


def check_rope(spec: DecoderSpec, model_type: Any) -> None:
    """A ValueError naming the model type for a ``spec.rope`` the core's rotary cannot build: now, rather
    than when the model is built."""
    if spec.rope is None:
        return
    try:
        RotaryEmbedding(spec.rope, spec.head_dim, spec.max_position_embeddings, torch.device("cpu"))
    except (ValueError, KeyError) as exc:
        raise ValueError(f"{model_type}: rope settings {spec.rope.rope_type!r} {spec.rope.params} are not "
                         f"supported: {exc}") from None
