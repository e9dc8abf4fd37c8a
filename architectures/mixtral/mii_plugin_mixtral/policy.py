"""Mixtral as a declaration: HF's common decoder layout with a mixture of experts in place of the MLP
(top-k of ``num_local_experts``, weights softmaxed over the chosen ones), GQA, and a sliding window
when the config sets one.

Experts load from either layout: hub checkpoints store one tensor per expert
(``block_sparse_moe.experts.{e}.w1/w2/w3``: gate, down, up), transformers' own models stack them
(``mlp.experts.gate_up_proj`` [E, 2F, H] and ``mlp.experts.down_proj`` [E, H, F]).
"""
from __future__ import annotations

from typing import Any

from mii_core.model.hf_common import LAYER, decoder_rules, decoder_spec
from mii_core.model.policy import ArchitecturePolicy
from mii_core.model.spec import DecoderSpec, MoESpec

_EXPERTS = "layers.{i}.mlp.experts."
_ROUTER = "layers.{i}.mlp.router.weight"


class MixtralPolicy(ArchitecturePolicy):
    weight_rules = {
        **decoder_rules(mlp=False),
        LAYER + "block_sparse_moe.gate.weight": _ROUTER,
        LAYER + "block_sparse_moe.experts.{e}.w1.weight": (_EXPERTS + "gate_up", "{e}.gate"),
        LAYER + "block_sparse_moe.experts.{e}.w3.weight": (_EXPERTS + "gate_up", "{e}.up"),
        LAYER + "block_sparse_moe.experts.{e}.w2.weight": (_EXPERTS + "down", "{e}"),
        LAYER + "mlp.gate.weight": _ROUTER,
        LAYER + "mlp.experts.gate_up_proj": _EXPERTS + "gate_up",
        LAYER + "mlp.experts.down_proj": _EXPERTS + "down",
    }

    def build_spec(self, hf: dict[str, Any]) -> DecoderSpec:
        experts, per_token = hf["num_local_experts"], hf["num_experts_per_tok"]
        if not 0 < per_token <= experts:
            raise ValueError(f"mixtral: num_experts_per_tok ({per_token}) must be between 1 and "
                             f"num_local_experts ({experts}); fix config.json")
        moe = MoESpec(num_experts=experts, experts_per_token=per_token, renormalize=True)
        return decoder_spec(hf, moe=moe, sliding_window=hf.get("sliding_window"), qkv_bias=False, o_bias=False,
                            mlp_bias=False)
