"""Qwen1.5-MoE / Qwen2-MoE as a declaration: Qwen2's attention (q/k/v biases from ``qkv_bias``, GQA) and a
mixture of experts (top-k of ``num_experts``, renormalised only with ``norm_topk_prob``) beside a shared
expert whose output is scaled by sigmoid(``shared_expert_gate`` · x); layers in ``mlp_only_layers`` or off
the ``decoder_sparse_step`` grid have a dense MLP of ``intermediate_size`` instead. Sliding windows as
Qwen2MoeConfig derives ``layer_types`` (with ``use_sliding_window``: even layers below ``max_window_layers``)."""
from __future__ import annotations

from typing import Any

from mii_core.model.hf_common import (LAYER, decoder_rules, decoder_spec, expert_rules, gated_mlp_rules,
                                      qwen_moe_spec, windows_of_layer_types)
from mii_core.model.policy import ArchitecturePolicy
from mii_core.model.spec import DecoderSpec


class Qwen2MoePolicy(ArchitecturePolicy):
    weight_rules = decoder_rules() | expert_rules() | gated_mlp_rules(LAYER + "mlp.shared_expert.",
                                                                      "layers.{i}.mlp.shared_expert") | {
        LAYER + "mlp.shared_expert_gate.weight": "layers.{i}.mlp.shared_expert_gate.weight",
    }

    def build_spec(self, hf: dict[str, Any]) -> DecoderSpec:
        moe = qwen_moe_spec(hf, shared_expert_intermediate_size=hf["shared_expert_intermediate_size"],
                            shared_expert_gate=True)
        qkv_bias = hf.get("qkv_bias", True)  # Qwen2MoeConfig's field; it reads no attention_bias
        return decoder_spec(hf, moe=moe, qkv_bias=qkv_bias, o_bias=False, mlp_bias=False,
                            layer_windows=_layer_windows(hf))


def _layer_windows(hf: dict[str, Any]):
    """As Qwen2MoeConfig: with ``use_sliding_window`` the even layers below ``max_window_layers`` (or those
    ``layer_types`` marks) see the last ``sliding_window`` keys; without it no layer has a window."""
    sliding = hf.get("use_sliding_window", False)
    window = hf.get("sliding_window") if sliding else None
    types = hf.get("layer_types") or [
        "sliding_attention" if sliding and i % 2 == 0 and i < hf.get("max_window_layers", 28) else "full_attention"
        for i in range(hf["num_hidden_layers"])]
    return windows_of_layer_types(hf, types, window)
