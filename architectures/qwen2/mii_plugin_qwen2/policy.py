"""Qwen2 / Qwen2.5 as a declaration: HF's common decoder layout with q/k/v biases, GQA, tied embeddings
on the small sizes, and HF's sliding-window flags: with ``use_sliding_window`` the layers from
``max_window_layers`` on (or those ``layer_types`` marks "sliding_attention") see the last
``sliding_window`` keys, the others everything. Without it ``sliding_window`` is ignored, as in HF."""
from __future__ import annotations

from typing import Any, Optional

from mii_core.model.hf_common import decoder_rules, decoder_spec
from mii_core.model.policy import ArchitecturePolicy
from mii_core.model.spec import DecoderSpec

_LAYER_TYPES = ("full_attention", "sliding_attention")


class Qwen2Policy(ArchitecturePolicy):
    weight_rules = decoder_rules()

    def build_spec(self, hf: dict[str, Any]) -> DecoderSpec:
        return decoder_spec(hf, qkv_bias=True, o_bias=False, mlp_bias=False, layer_windows=layer_windows(hf))


def layer_windows(hf: dict[str, Any]) -> tuple[Optional[int], ...]:
    """Each layer's window, as HF's Qwen2Config derives ``layer_types`` and Qwen2Attention reads them."""
    layers = hf["num_hidden_layers"]
    window = hf.get("sliding_window") if hf.get("use_sliding_window", False) else None
    types = hf.get("layer_types") or [
        "sliding_attention" if window is not None and i >= hf.get("max_window_layers", 28) else "full_attention"
        for i in range(layers)]
    if len(types) != layers or any(t not in _LAYER_TYPES for t in types):
        raise ValueError(f"qwen2: layer_types {types} must name {layers} layers, each one of {_LAYER_TYPES}")
    if "sliding_attention" in types and window is None:
        raise ValueError("qwen2: layer_types has sliding_attention layers but no window is set "
                         "(use_sliding_window false or sliding_window null); fix config.json")
    return tuple(window if t == "sliding_attention" else None for t in types)
