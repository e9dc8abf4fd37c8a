"""Feed-forward block: gated (SwiGLU-style, gate|up fused) or plain up → act → down."""
from __future__ import annotations

import torch
from torch import nn

from mii_core.model.parallel import ColumnParallelLinear, ParallelContext, RowParallelLinear
from mii_core.model.spec import DecoderSpec

_PLAIN_ACTIVATIONS = {"gelu": nn.functional.gelu, "relu": nn.functional.relu, "silu": nn.functional.silu,
                      "gelu_new": lambda x: nn.functional.gelu(x, approximate="tanh")}


class MLP(nn.Module):
    def __init__(self, spec: DecoderSpec, ctx: ParallelContext, kernels, device: torch.device, dtype: torch.dtype):
        super().__init__()
        self.kernels, self.activation, self.gated = kernels, spec.activation, spec.gated_mlp
        parts = [spec.intermediate_size] * (2 if spec.gated_mlp else 1)
        self.up = ColumnParallelLinear(spec.hidden_size, parts, spec.mlp_bias, ctx, device, dtype,
                                       part_names=("gate", "up") if spec.gated_mlp else ("up",))
        self.down = RowParallelLinear(spec.intermediate_size, spec.hidden_size, spec.mlp_bias, ctx, device, dtype)
        if not spec.gated_mlp and spec.activation not in _PLAIN_ACTIVATIONS:
            raise ValueError(f"activation '{spec.activation}' is not supported ({', '.join(_PLAIN_ACTIVATIONS)})")

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        up = self.up(hidden)
        if self.gated:
            act = self.kernels.gated_activation(up, self.activation)
        else:
            act = _PLAIN_ACTIVATIONS[self.activation](up)
        return self.down(act)
