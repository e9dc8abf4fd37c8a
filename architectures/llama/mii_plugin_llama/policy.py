"""Llama as a declaration: how its HF config reads, and where each checkpoint tensor goes."""
from __future__ import annotations

from typing import Any

from mii_core.model.hf_common import decoder_rules, decoder_spec
from mii_core.model.policy import ArchitecturePolicy
from mii_core.model.spec import DecoderSpec


class LlamaPolicy(ArchitecturePolicy):
    # HF's common decoder layout, with the optional attention and MLP biases (attention_bias, mlp_bias)
    weight_rules = decoder_rules()

    def build_spec(self, hf: dict[str, Any]) -> DecoderSpec:
        return decoder_spec(hf)
