"""The parameters a layer owns: created empty, then filled from the checkpoint through each parameter's
``weight_loader(param, loaded, shard_id, name)``, which checks the shape it receives."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import nn

from mii_core.model.quantization import QuantizedWeight, quantize_weight

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


class WeightSlot:
    """Where a layer's weight loads. Full precision: the parameter itself. Quantizing (``mode`` set): the
    parameter only names the weight for the loader (no storage: device "meta"); its parts are copied into
    a staging buffer made at the first part, and once every element has arrived it becomes the
    :class:`QuantizedWeight` ``quantized`` and the buffer is freed. So a model in the loading holds its
    quantized weights plus the full-precision weights still arriving (one layer, as checkpoints are stored
    layer by layer), never the whole model in full precision."""

    def __init__(self, shape: Sequence[int], device: torch.device, dtype: torch.dtype, mode: Optional[str] = None):
        self.mode, self.device = mode, device
        self.param = empty_parameter(shape, torch.device("meta") if mode else device, dtype)
        self.quantized: Optional[QuantizedWeight] = None
        self._staging: Optional[torch.Tensor] = None
        self._arrived: Optional[torch.Tensor] = None  # bool, one per staged element

    @property
    def staged(self) -> bool:
        """Whether part of a weight waits in the staging buffer for the rest."""
        return self._staging is not None

    def buffer(self) -> torch.Tensor:
        """The tensor a loader narrows and copies into (via ``copy``)."""
        if self.mode is None:
            return self.param.data
        if self._staging is None:
            self._staging = torch.empty(self.param.shape, device=self.device, dtype=self.param.dtype)
            self._arrived = torch.zeros(self.param.shape, device=self.device, dtype=torch.bool)
        return self._staging

    def copy(self, dst: torch.Tensor, src: torch.Tensor, name: str) -> None:
        """Copies ``src`` into ``dst`` (a view of ``buffer()``); quantizes the weight once it is complete."""
        copy_checking_shape(dst, src, name)
        if self.mode is None:
            return
        # the same elements of the (equally shaped, contiguous) arrival mask as dst's of the staging buffer
        self._arrived.as_strided(dst.size(), dst.stride(), dst.storage_offset()).fill_(True)
        if bool(self._arrived.all()):
            self.quantized = quantize_weight(self._staging, self.mode)
            self._staging = self._arrived = None


def load_into_slot(slot: WeightSlot):
    """A ``weight_loader`` for a slot every rank holds whole."""
    def load(_param: nn.Parameter, loaded: torch.Tensor, _shard: ShardId, name: str = "") -> None:
        slot.copy(slot.buffer(), loaded, name)
    return load


def quantized_bytes(model: nn.Module) -> int:
    """Bytes of every quantized weight (codes and scales) in ``model``'s slots."""
    slots = [value for module in model.modules() for value in vars(module).values() if isinstance(value, WeightSlot)]
    return sum(slot.quantized.nbytes() for slot in slots if slot.quantized is not None)
