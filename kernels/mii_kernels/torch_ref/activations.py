from __future__ import annotations

import torch

from mii_core.model.ops import join_amax

_ACTIVATIONS = {
    "silu": torch.nn.functional.silu,
    "gelu": torch.nn.functional.gelu,
    "gelu_tanh": lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
}


def gated_activation(x: torch.Tensor, activation: str, amax: torch.Tensor | None = None) -> torch.Tensor:
    """act(gate) * up; with ``amax``, max |output| joined into it (the contract in mii_core/model/ops.py)."""
    gate, up = x.chunk(2, dim=-1)
    try:
        act = _ACTIVATIONS[activation]
    except KeyError:
        raise ValueError(f"gated activation '{activation}' is not supported ({', '.join(_ACTIVATIONS)})") from None
    out = act(gate) * up
    return out if amax is None else join_amax(amax, out)


gated_activation.joins_amax = True
