"""The activations an MLP or the experts accept, by their HF names (``hidden_act``)."""
from __future__ import annotations

from torch import nn

# a plain MLP applies these in torch
PLAIN_ACTIVATIONS = {"gelu": nn.functional.gelu, "relu": nn.functional.relu, "silu": nn.functional.silu,
                     "gelu_new": lambda x: nn.functional.gelu(x, approximate="tanh"),
                     "gelu_pytorch_tanh": lambda x: nn.functional.gelu(x, approximate="tanh")}
# a gated MLP and the experts pass these to the gated_activation / moe_experts ops: HF name -> op's name
GATED_ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu": "gelu", "gelu_new": "gelu_tanh",
                     "gelu_pytorch_tanh": "gelu_tanh"}
