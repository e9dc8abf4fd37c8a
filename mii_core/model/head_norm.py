"""Attention with a norm over each projected query and key head before rotary (weight [head_dim], shared by
the heads): Qwen3 and Qwen3-MoE (RMSNorm, ``q_norm`` / ``k_norm``), Gemma 3 (its (1 + w) RMSNorm, by
overriding :meth:`HeadNormAttention.head_norm`)."""
from __future__ import annotations

import torch
from torch import nn

from mii_core.distributed.parallel_context import ParallelContext
from mii_core.model.attention import Attention
from mii_core.model.norm import Norm
from mii_core.model.spec import DecoderSpec


class HeadNormAttention(Attention):
    """The core's attention with ``q_norm`` and ``k_norm`` on every query and key head before rotary.
    Engine parameters: ``q_norm.weight``, ``k_norm.weight`` (each [head_dim])."""

    def __init__(self, spec: DecoderSpec, ctx: ParallelContext, kernels, device: torch.device,
                 dtype: torch.dtype, layer_index: int = 0):
        super().__init__(spec, ctx, kernels, device, dtype, layer_index)
        self.q_norm = self.head_norm(spec, kernels, device, dtype)
        self.k_norm = self.head_norm(spec, kernels, device, dtype)

    def head_norm(self, spec: DecoderSpec, kernels, device: torch.device, dtype: torch.dtype) -> nn.Module:
        """The norm of one head: the kernels' RMSNorm over head_dim with the spec's epsilon."""
        return Norm("rms", spec.head_dim, spec.norm_eps, kernels, device, dtype)

    def adjust_qk(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # the norms take rows: one row per head
        return (self.q_norm(q.reshape(-1, self.head_dim)).view_as(q),
                self.k_norm(k.reshape(-1, self.head_dim)).view_as(k))
