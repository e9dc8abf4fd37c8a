"""Qwen3-MoE as a declaration: Qwen3's attention (an RMSNorm over each query and key head before rotary,
GQA, ``attention_bias`` on q/k/v and o) and a mixture of experts (top-k of ``num_experts``, renormalised
with ``norm_topk_prob``) with no shared expert; layers in ``mlp_only_layers`` or off the
``decoder_sparse_step`` grid have a dense MLP of ``intermediate_size``. With ``use_sliding_window`` every
layer sees the last ``sliding_window`` keys (Qwen3MoeConfig has no per-layer types)."""
from __future__ import annotations

from typing import Any

import torch

from mii_core.distributed.parallel_context import ParallelContext
from mii_core.model.decoder import DecoderModel
from mii_core.model.head_norm import HeadNormAttention
from mii_core.model.hf_common import LAYER, decoder_rules, decoder_spec, expert_rules, qwen_moe_spec
from mii_core.model.parts import DecoderParts
from mii_core.model.policy import ArchitecturePolicy
from mii_core.model.spec import DecoderSpec


class Qwen3MoePolicy(ArchitecturePolicy):
    weight_rules = decoder_rules() | expert_rules() | {
        LAYER + "self_attn.q_norm.weight": "layers.{i}.attn.q_norm.weight",
        LAYER + "self_attn.k_norm.weight": "layers.{i}.attn.k_norm.weight",
    }

    def build_spec(self, hf: dict[str, Any]) -> DecoderSpec:
        window = hf.get("sliding_window") if hf.get("use_sliding_window", False) else None
        return decoder_spec(hf, moe=qwen_moe_spec(hf), mlp_bias=False, sliding_window=window)

    def build_model(self, ctx: ParallelContext, kernels, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        return DecoderModel(self.spec, ctx, kernels, device, dtype, DecoderParts(attention=HeadNormAttention))
