import torch

_ACTIVATIONS = {
    "silu": torch.nn.functional.silu,
    "gelu": torch.nn.functional.gelu,
    "gelu_tanh": lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
}


def gated_activation(x: torch.Tensor, activation: str) -> torch.Tensor:
    gate, up = x.chunk(2, dim=-1)
    try:
        act = _ACTIVATIONS[activation]
    except KeyError:
        raise ValueError(f"gated activation '{activation}' is not supported ({', '.join(_ACTIVATIONS)})") from None
    return act(gate) * up
