"""Feed-forward blocks: gated (SwiGLU-style, gate|up fused), plain up → act → down, and mixture of experts.

Engine parameters: ``up.{weight,bias}`` (shards "gate", "up"; just "up" when not gated),
``down.{weight,bias}``; for MoE see :mod:`mii_core.model.moe`.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch
from torch import nn

from mii_core.distributed.parallel_context import ParallelContext
from mii_core.model.activations import GATED_ACTIVATIONS, PLAIN_ACTIVATIONS
from mii_core.model.moe import MoE
from mii_core.model.ops import KernelOps
from mii_core.model.parallel import ColumnParallelLinear, RowParallelLinear
from mii_core.model.spec import DecoderSpec


class MLP(nn.Module):
    def __init__(self, spec: DecoderSpec, ctx: ParallelContext, kernels: KernelOps, device: torch.device,
                 dtype: torch.dtype):
        super().__init__()
        self.kernels, self.gated = kernels, spec.gated_mlp
        supported = GATED_ACTIVATIONS if spec.gated_mlp else PLAIN_ACTIVATIONS
        if spec.activation not in supported:
            raise ValueError(f"activation '{spec.activation}' is not supported for a "
                             f"{'gated' if spec.gated_mlp else 'plain'} MLP (supported: {', '.join(supported)})")
        self.activation = GATED_ACTIVATIONS[spec.activation] if spec.gated_mlp else PLAIN_ACTIVATIONS[spec.activation]
        parts = [spec.intermediate_size] * (2 if spec.gated_mlp else 1)
        self.up = ColumnParallelLinear(spec.hidden_size, parts, spec.mlp_bias, ctx, kernels, device, dtype,
                                       part_names=("gate", "up") if spec.gated_mlp else ("up",))
        self.down = RowParallelLinear(spec.intermediate_size, spec.hidden_size, spec.mlp_bias, ctx, kernels,
                                      device, dtype)

    def input_linear(self) -> nn.Module:
        """The linear this block's input goes into as it is (up, or the fused gate|up): see ``Attention``'s."""
        return self.up

    def takes_deferred_norm(self) -> bool:
        """As ``Attention.takes_deferred_norm``: this forward passes its input straight into ``up``."""
        return type(self).forward is MLP.forward

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        up = self.up(hidden)
        if not self.gated:
            return self.down(self.activation(up))
        # where the down projection quantizes its input per tensor (mode "fp8", a step of many tokens), the
        # gated activation joins that input's max |x| as it writes it, so the quantization reads it once;
        # elsewhere one op may do both (a decode step's GEMV computing the activation as it reads it)
        amax = self.down.activation_amax(up.shape[0])
        if amax is None:
            return self.down.gated(up, self.activation)
        return self.down(self.kernels.gated_activation(up, self.activation, amax), amax)


def dense_mlp(spec: DecoderSpec, ctx: ParallelContext, kernels: KernelOps, device: torch.device, dtype: torch.dtype,
              intermediate_size: int) -> MLP:
    """The spec's dense gated MLP at another width (a mixture of experts' shared expert)."""
    return MLP(replace(spec, intermediate_size=intermediate_size, moe=None), ctx, kernels, device, dtype)


def build_mlp(spec: DecoderSpec, ctx: ParallelContext, kernels: KernelOps, device: torch.device, dtype: torch.dtype,
              layer_index: int = 0, moe_block: Callable[..., nn.Module] = MoE) -> nn.Module:
    """The spec's MLP: its mixture of experts on the layers ``spec.moe`` makes sparse, else the dense MLP.
    ``moe_block``: the experts' block, built as :class:`MoE` is (a family's subclass routing its own way)."""
    if spec.moe is not None and spec.moe.is_sparse(layer_index):
        shared_width = spec.moe.shared_expert_intermediate_size
        shared = dense_mlp(spec, ctx, kernels, device, dtype, shared_width) if shared_width else None
        return moe_block(spec, ctx, kernels, device, dtype, shared_expert=shared)
    return MLP(spec, ctx, kernels, device, dtype)
