"""Qwen3 (dense) as a declaration: HF's common decoder layout, GQA, ``head_dim`` from the config, no q/k/v
bias (``attention_bias``), Qwen2's sliding-window flags, and an RMSNorm over each query and key head
before rotary (``q_norm`` / ``k_norm``): this family's attention, put into the core's decoder."""
from __future__ import annotations

from typing import Any

import torch

from mii_core.distributed.parallel_context import ParallelContext
from mii_core.model.decoder import DecoderModel
from mii_core.model.hf_common import LAYER, decoder_rules, decoder_spec, layer_windows
from mii_core.model.head_norm import HeadNormAttention
from mii_core.model.parts import DecoderParts
from mii_core.model.policy import ArchitecturePolicy
from mii_core.model.spec import DecoderSpec


class Qwen3Policy(ArchitecturePolicy):
    weight_rules = decoder_rules() | {
        LAYER + "self_attn.q_norm.weight": "layers.{i}.attn.q_norm.weight",
        LAYER + "self_attn.k_norm.weight": "layers.{i}.attn.k_norm.weight",
    }

    def build_spec(self, hf: dict[str, Any]) -> DecoderSpec:
        return decoder_spec(hf, layer_windows=layer_windows(hf))

    def build_model(self, ctx: ParallelContext, kernels, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        return DecoderModel(self.spec, ctx, kernels, device, dtype, DecoderParts(attention=HeadNormAttention))
