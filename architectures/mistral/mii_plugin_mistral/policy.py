"""Mistral as a declaration: HF's common decoder layout with grouped-query attention and a sliding
window over the last ``sliding_window`` keys (every layer; null in v0.2 and later: full attention)."""
from __future__ import annotations

from typing import Any

from mii_core.model.hf_common import decoder_rules, decoder_spec
from mii_core.model.policy import ArchitecturePolicy
from mii_core.model.spec import DecoderSpec


class MistralPolicy(ArchitecturePolicy):
    weight_rules = decoder_rules()

    def build_spec(self, hf: dict[str, Any]) -> DecoderSpec:
        # HF's Mistral has no attention or MLP biases whatever the config says
        return decoder_spec(hf, sliding_window=hf.get("sliding_window"), qkv_bias=False, o_bias=False,
                            mlp_bias=False)
