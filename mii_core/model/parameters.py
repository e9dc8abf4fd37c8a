"""The parameters a layer owns: created empty, then filled from the checkpoint through each parameter's
``weight_loader(param, loaded, shard_id, name)``, which checks the shape it receives."""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Sequence, Union

import torch
from torch import nn

from mii_core.model.quantization import QuantizedWeight, ShippedFormat, quantize_weight

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
    layer by layer), never the whole model in full precision.

    Shipped (``shipped`` set: a checkpoint stored in FP8): each part arrives as its scales (inside
    ``receiving_scales()``, rows of [..., N, scale columns], loaded through the layer's own loader so they
    are split and sliced as its rows are) followed by its e4m3 codes; the codes and scales are kept as they
    are, never re-quantized. A weight the checkpoint left unquantized (``modules_to_not_convert``, ``ignore``)
    arrives as plain values with no scales first and loads into the parameter, made real then."""

    def __init__(self, shape: Sequence[int], device: torch.device, dtype: torch.dtype, mode: Optional[str] = None,
                 shipped: Optional[ShippedFormat] = None):
        self.mode, self.device, self.shipped = mode, device, shipped
        self.param = empty_parameter(shape, torch.device("meta") if mode or shipped else device, dtype)
        self.param.weight_slot = self  # the loader of shipped codes finds the slot from the parameter
        self.quantized: Optional[QuantizedWeight] = None
        self._staging: Optional[torch.Tensor] = None
        self._arrived: Optional[torch.Tensor] = None  # bool, one per staged element
        self._scales: Optional[torch.Tensor] = None  # shipped: float32 [..., N, scale columns]
        self._receiving_scales = False

    @property
    def staged(self) -> bool:
        """Whether part of a weight waits in the staging buffer for the rest."""
        return self._staging is not None

    def buffer(self) -> torch.Tensor:
        """The tensor a loader narrows and copies into (via ``copy``)."""
        if self.shipped is not None:
            return self._shipped_buffer()
        if self.mode is None:
            return self.param.data
        if self._staging is None:
            self._start_staging(self.param.dtype)
        return self._staging

    def _start_staging(self, dtype: torch.dtype) -> None:
        self._staging = torch.empty(self.param.shape, device=self.device, dtype=dtype)
        self._arrived = torch.zeros(self.param.shape, device=self.device, dtype=torch.bool)

    def _shipped_buffer(self) -> torch.Tensor:
        """Scales while receiving them, then the codes; a weight that came with no scales: the parameter."""
        if self._receiving_scales:
            if self._scales is None:
                columns = self.shipped.scale_columns(self.param.shape[-1])
                self._scales = torch.empty((*self.param.shape[:-1], columns), device=self.device, dtype=torch.float32)
                self._start_staging(torch.float8_e4m3fn)
            return self._scales
        if self._scales is not None:
            return self._staging
        if self.param.is_meta:  # unquantized in the checkpoint: stored in the model's dtype after all
            _give_storage(self.param, self.device)
        return self.param.data

    @contextlib.contextmanager
    def receiving_scales(self) -> Iterator[None]:
        """Inside this block the loader's copies fill the shipped scales (rows of [..., N, scale columns])."""
        if self.shipped is None or not self.param.is_meta:
            raise ValueError("shipped FP8 scales arrived for a weight that "
                             + ("is not loaded from shipped codes" if self.shipped is None else
                                "the checkpoint also stores unquantized (part of a fused layer is not FP8)"))
        self._receiving_scales = True
        try:
            yield
        finally:
            self._receiving_scales = False

    def copy(self, dst: torch.Tensor, src: torch.Tensor, name: str) -> None:
        """Copies ``src`` into ``dst`` (a view of ``buffer()``); quantizes the weight once it is complete."""
        if self.shipped is not None and not self._receiving_scales:
            self._check_shipped_dtype(src, name)
        copy_checking_shape(dst, src, name)
        if (self.mode is None and self._scales is None) or self._receiving_scales:
            return
        # the same elements of the (equally shaped, contiguous) arrival mask as dst's of the staging buffer
        self._arrived.as_strided(dst.size(), dst.stride(), dst.storage_offset()).fill_(True)
        if bool(self._arrived.all()):
            self.quantized = self._complete()
            self._staging = self._arrived = self._scales = None

    def _check_shipped_dtype(self, src: torch.Tensor, name: str) -> None:
        """Codes where scales came first; plain values otherwise (one layer's parts are all one or the other)."""
        is_codes = src.dtype == torch.float8_e4m3fn
        if is_codes != (self._scales is not None):
            raise ValueError(f"checkpoint tensor '{name}' is {src.dtype} but " + (
                "arrived with no scales" if is_codes else "the other parts of its layer are shipped FP8 codes")
                + "; a layer's weights must be all FP8 (with scales) or all unquantized")

    def _complete(self) -> QuantizedWeight:
        if self.shipped is None:
            return quantize_weight(self._staging, self.mode)
        scale = self._scales if self.shipped.group_size is not None else self._scales.squeeze(-1)
        return QuantizedWeight(self._staging, scale, self.shipped.mode, self.param.shape[-1], self.shipped.group_size)


def _give_storage(param: nn.Parameter, device: torch.device) -> None:
    """Turns a "meta" parameter into an empty one on ``device``, in place (the modules holding it keep it;
    ``param.data = ...`` cannot change a meta tensor), keeping its attributes (``weight_loader``, ...)."""
    real = empty_parameter(param.shape, device, param.dtype)
    torch.utils.swap_tensors(param, real)  # swaps the attribute dicts too: take ours back
    param.__dict__.update(real.__dict__)


def load_into_slot(slot: WeightSlot):
    """A ``weight_loader`` for a slot every rank holds whole."""
    def load(_param: nn.Parameter, loaded: torch.Tensor, _shard: ShardId, name: str = "") -> None:
        slot.copy(slot.buffer(), loaded, name)
    return load


def quantized_bytes(model: nn.Module) -> int:
    """Bytes of every quantized weight (codes and scales) in ``model``'s slots."""
    slots = [value for module in model.modules() for value in vars(module).values() if isinstance(value, WeightSlot)]
    return sum(slot.quantized.nbytes() for slot in slots if slot.quantized is not None)
