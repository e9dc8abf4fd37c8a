"""The MPT settings HF's ``MptForCausalLM`` does not honour, each refused by name with what it needs.

HF reads d_model, n_heads, n_layers, vocab_size, max_seq_len, layer_norm_epsilon, tie_word_embeddings and,
from ``attn_config``, softmax_scale and clip_qkv (all honoured by the policy); dropout, ``attn_impl``,
``init_device``, ``embedding_fraction`` and ``attn_uses_sequence_id`` change nothing at inference. Everything
below it computes one fixed way, so a config asking for another is a model HF would run wrongly."""
from __future__ import annotations

from typing import Any

from mii_plugin_mpt.blocks import ALIBI_BIAS_MAX

# attn_config key -> (the value HF computes with, what the key means); a missing key is HF's default
_ATTENTION_FIXED = {
    "attn_type": ("multihead_attention", "multi-query / grouped-query attention"),
    "alibi": (True, "positions other than ALiBi (HF applies ALiBi always)"),
    "alibi_bias_max": (ALIBI_BIAS_MAX, "ALiBi slopes from another maximum (HF's MptModel always uses 8)"),
    "qk_ln": (False, "LayerNorm on queries and keys"),
    "qk_gn": (False, "GroupNorm on queries and keys"),
    "prefix_lm": (False, "bidirectional attention over the prompt"),
    "rope": (False, "rotary positions"),
    "fused_qkv": (True, "separate q/k/v projections"),
}
_NORM_TYPES = ("low_precision_layernorm", "layernorm")  # one LayerNorm without bias, as HF builds it
_FFN_TYPES = ("mptmlp",)


def check_supported(hf: dict[str, Any], expansion_ratio: int) -> None:
    _check_attention(hf.get("attn_config") or {})
    _check_ffn(hf, expansion_ratio)
    if hf.get("no_bias", True) is not True:
        _refuse("no_bias false (biased projections and norms: HF's MptForCausalLM has none)", "true")
    if hf.get("logit_scale") is not None:
        _refuse(f"logit_scale {hf['logit_scale']!r} (HF's MptForCausalLM does not scale its logits)", "null")
    if hf.get("norm_type", _NORM_TYPES[0]) not in _NORM_TYPES:
        _refuse(f"norm_type {hf['norm_type']!r} (HF builds LayerNorms without bias)", " or ".join(_NORM_TYPES))


def _check_attention(attn: dict[str, Any]) -> None:
    for key, (value, meaning) in _ATTENTION_FIXED.items():
        if key in attn and attn[key] != value:
            _refuse(f"attn_config.{key} {attn[key]!r} ({meaning})", repr(value))
    if attn.get("sliding_window_size", -1) not in (-1, None):
        _refuse(f"attn_config.sliding_window_size {attn['sliding_window_size']!r} (a sliding window)", "-1")
    clip = attn.get("clip_qkv")
    if clip is not None and not clip > 0:
        _refuse(f"attn_config.clip_qkv {clip!r}", "null or a positive number")


def _check_ffn(hf: dict[str, Any], expansion_ratio: int) -> None:
    if hf.get("expansion_ratio", expansion_ratio) != expansion_ratio:
        _refuse(f"expansion_ratio {hf['expansion_ratio']!r} (HF's MptMLP is {expansion_ratio} × d_model wide)",
                str(expansion_ratio))
    ffn = hf.get("ffn_config") or {}
    if ffn.get("ffn_type", _FFN_TYPES[0]) not in _FFN_TYPES:
        _refuse(f"ffn_config.ffn_type {ffn['ffn_type']!r} (HF's MptMLP only)", repr(_FFN_TYPES[0]))
    act = ffn.get("ffn_act_fn") or {}
    if act and (act.get("name") != "gelu" or act.get("approximate", "none") not in ("none", None)):
        _refuse(f"ffn_config.ffn_act_fn {act!r} (HF's MptMLP applies the exact GELU)", "{'name': 'gelu'}")
    width = ffn.get("ffn_hidden_size")
    if width is not None and width != expansion_ratio * hf["d_model"]:
        _refuse(f"ffn_config.ffn_hidden_size {width!r} (HF's MptMLP is {expansion_ratio} × d_model wide)",
                "null")


def _refuse(what: str, needed: str) -> None:
    raise ValueError(f"mpt: {what} is not supported: HF's MptForCausalLM would not compute it; "
                     f"it needs {needed}")
