"""Qwen2 / Qwen2.5 as a declaration: HF's common decoder layout with q/k/v biases, GQA, tied embeddings
on the small sizes, and HF's sliding-window flags: with ``use_sliding_window`` the layers from
``max_window_layers`` on (or those ``layer_types`` marks "sliding_attention") see the last
``sliding_window`` keys, the others everything. Without it ``sliding_window`` is ignored, as in HF."""
from __future__ import annotations

from typing import Any

from mii_core.model.hf_common import decoder_rules, decoder_spec, layer_windows
from mii_core.model.policy import ArchitecturePolicy
from mii_core.model.spec import DecoderSpec


class Qwen2Policy(ArchitecturePolicy):
    weight_rules = decoder_rules()

    def build_spec(self, hf: dict[str, Any]) -> DecoderSpec:
        return decoder_spec(hf, qkv_bias=True, o_bias=False, mlp_bias=False, layer_windows=layer_windows(hf))

