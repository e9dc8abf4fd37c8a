"""The parameters a layer owns: created empty, then filled from the checkpoint through each parameter's
``weight_loader(param, loaded, shard_id, name)``, which checks the shape it receives."""
from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import nn

ShardId = Union[int, str, None]  # which part of a fused parameter a checkpoint tensor fills (see weight_rules)


def empty_parameter(shape: Sequence[int], device: torch.device, dtype: torch.dtype) -> nn.Parameter:
    """A frozen parameter of ``shape`` with no values yet."""
    # torch.empty: every value is overwritten by the checkpoint; missing ones are reported, not zeroed
    return nn.Parameter(torch.empty(*shape, device=device, dtype=dtype), requires_grad=False)


def copy_checking_shape(dst: torch.Tensor, src: torch.Tensor, name: str) -> None:
    """Copies checkpoint tensor ``name`` into ``dst``; a shape mismatch is an error naming both shapes."""
    if dst.shape != src.shape:
        raise ValueError(f"checkpoint tensor for '{name}' has shape {tuple(src.shape)}, expected {tuple(dst.shape)}")
    dst.copy_(src)


def load_whole(param: nn.Parameter, loaded: torch.Tensor, _shard: ShardId, name: str = "") -> None:
    """The ``weight_loader`` of a parameter every rank holds whole (norms, routers, replicated layers)."""
    copy_checking_shape(param.data, loaded, name)
