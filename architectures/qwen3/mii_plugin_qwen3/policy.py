"""Qwen3 (dense) as a declaration: HF's common decoder layout, GQA, ``head_dim`` from the config, no q/k/v
bias (``attention_bias``), Qwen2's sliding-window flags, and an RMSNorm over each query and key head
before rotary (``q_norm`` / ``k_norm``): this family's attention, put into the core's decoder."""
from __future__ import annotations

from typing import Any

import torch

from mii_core.distributed.parallel_context import ParallelContext
from mii_core.model.attention import Attention
from mii_core.model.decoder import DecoderModel
from mii_core.model.hf_common import LAYER, decoder_rules, decoder_spec, layer_windows
from mii_core.model.norm import Norm
from mii_core.model.parts import DecoderParts
from mii_core.model.policy import ArchitecturePolicy
from mii_core.model.spec import DecoderSpec


class QKNormAttention(Attention):
    """The core's attention with an RMSNorm (weight [head_dim], shared by the heads) on every projected
    query and key head, before rotary, as Qwen3Attention. Engine parameters: ``q_norm.weight``, ``k_norm.weight``."""

    def __init__(self, spec: DecoderSpec, ctx: ParallelContext, kernels, device: torch.device,
                 dtype: torch.dtype, layer_index: int = 0):
        super().__init__(spec, ctx, kernels, device, dtype, layer_index)
        self.q_norm = Norm("rms", spec.head_dim, spec.norm_eps, kernels, device, dtype)
        self.k_norm = Norm("rms", spec.head_dim, spec.norm_eps, kernels, device, dtype)

    def adjust_qk(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # the norm ops take rows: one row per head
        return (self.q_norm(q.reshape(-1, self.head_dim)).view_as(q),
                self.k_norm(k.reshape(-1, self.head_dim)).view_as(k))


class Qwen3Policy(ArchitecturePolicy):
    weight_rules = decoder_rules() | {
        LAYER + "self_attn.q_norm.weight": "layers.{i}.attn.q_norm.weight",
        LAYER + "self_attn.k_norm.weight": "layers.{i}.attn.k_norm.weight",
    }

    def build_spec(self, hf: dict[str, Any]) -> DecoderSpec:
        return decoder_spec(hf, layer_windows=layer_windows(hf))

    def build_model(self, ctx: ParallelContext, kernels, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        return DecoderModel(self.spec, ctx, kernels, device, dtype, DecoderParts(attention=QKNormAttention))
