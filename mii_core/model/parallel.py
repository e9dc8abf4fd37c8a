"""The linear layers and embeddings that shard themselves over tensor-parallel ranks when weights are loaded.

Each parameter carries a ``weight_loader(param, loaded, shard_id)``: sharding for tensor parallelism
lives with the layer, so architecture plugins only say which checkpoint tensor goes where. A linear made
inside ``quantization.building_quantized(mode)`` keeps its weight in a quantizing :class:`WeightSlot`
and multiplies through the ``quant_linear`` op; embeddings and the LM head are never quantized.
"""
from __future__ import annotations

import weakref
from typing import Optional, Sequence

import torch
from torch import nn

from mii_core.distributed.parallel_context import ParallelContext
from mii_core.model.deferred_norm import DeferredNorm
from mii_core.model.parameters import (ShardId, WeightSlot, copy_checking_shape, empty_parameter, load_into_slot,
                                       load_whole)
from mii_core.model.quantization import building_mode, building_shipped


class _SlotLinear(nn.Module):
    """What the linears share: a weight in a :class:`WeightSlot` (quantized when the model is built in a
    quantization mode) and the product through the matching op."""

    def _make_weight(self, shape: Sequence[int], device: torch.device, dtype: torch.dtype) -> None:
        self.weight_slot = WeightSlot(shape, device, dtype, building_mode(), building_shipped())
        self.weight = self.weight_slot.param

    def dense_weight(self, dtype: torch.dtype) -> torch.Tensor:
        """This rank's weight as full-precision values in ``dtype`` (dequantized when quantized: a copy then),
        for a block that multiplies by it otherwise than through ``linear`` (per-head batched products)."""
        quantized = self.weight_slot.quantized
        return self.weight.to(dtype) if quantized is None else quantized.dequantize(dtype)

    def activation_amax(self, tokens: int) -> Optional[torch.Tensor]:
        """A zeroed float32 [] for the op producing this linear's input to join max |x| into (``x_amax``), when
        its product at ``tokens`` tokens quantizes x per tensor through a ``quant_linear`` that takes one;
        else None (nothing to join)."""
        quantized = self.weight_slot.quantized
        if quantized is None or not quantized.quantizes_activations_at(tokens) or not self.kernels.takes_x_amax():
            return None
        return torch.zeros((), dtype=torch.float32, device=quantized.data.device)

    def expect_input_amax(self, x: torch.Tensor, amax: torch.Tensor) -> None:
        """The op that made ``x`` joined max |x| into ``amax``: this linear's next product of that very tensor
        takes it as ``x_amax`` (a block that hands the linear another tensor gets none, and nothing is lost:
        the op then reads x for its scale). Held by a weak reference, and for one product only."""
        self._pending_amax = (weakref.ref(x), amax)

    def _input_amax(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        pending, self._pending_amax = getattr(self, "_pending_amax", None), None
        return pending[1] if pending is not None and pending[0]() is x else None

    def _gated_product(self, x: torch.Tensor, activation: str, bias: Optional[torch.Tensor]) -> torch.Tensor:
        """This linear of act(gate) · up for x = [gate | up], through the fused op where the kernels offer one."""
        quantized = self.weight_slot.quantized
        if quantized is not None:
            return self.kernels.gated_quant_linear(x, quantized, bias, activation)
        return self.kernels.gated_linear(x, self.weight, bias, activation)

    def folds_norm(self) -> bool:
        """Whether the kernels multiply this linear by an RMSNorm of its input in one op (``deferred_norm``):
        asked as the model is built, before the weight loads, so of the kind it is built to hold (a shipped
        module left unquantized then finds no quantized fused op for it at run time, and runs the norm apart)."""
        folds = getattr(self.kernels, "folds_rms_norm", None)
        slot = self.weight_slot
        return folds is not None and folds(slot.mode is not None or slot.shipped is not None)

    def _product(self, x, bias: Optional[torch.Tensor], x_amax: Optional[torch.Tensor] = None) -> torch.Tensor:
        if isinstance(x, DeferredNorm):
            out = x.fold_into(self._normed_product(bias))
            if out is not None:
                return out
            x = x.normed
        if x_amax is None:
            x_amax = self._input_amax(x)
        quantized = self.weight_slot.quantized
        if quantized is not None:
            return self.kernels.quant_linear(x, quantized, bias, x_amax)
        return self.kernels.linear(x, self.weight, bias)


    def _normed_product(self, bias: Optional[torch.Tensor]):
        """The kernels' fused norm-and-product for this weight, taking (x, residual, norm weight, eps)."""
        quantized = self.weight_slot.quantized
        if quantized is not None:
            return lambda *norm: self.kernels.rms_norm_quant_linear(*norm, quantized, bias)
        return lambda *norm: self.kernels.rms_norm_linear(*norm, self.weight, bias)


class ColumnParallelLinear(_SlotLinear):
    """y = x Wᵀ with W's output rows split over ranks; ``parts`` lists fused outputs (q|k|v, gate|up) by their
    full sizes. ``part_slices`` gives this rank's (start, size) within each part where it is not an even
    1/N split (KV heads replicated over more ranks than there are heads)."""

    def __init__(self, in_features: int, parts: Sequence[int], bias: bool, ctx: ParallelContext, kernels,
                 device: torch.device, dtype: torch.dtype, part_names: Optional[Sequence[str]] = None,
                 part_slices: Optional[Sequence[tuple[int, int]]] = None):
        super().__init__()
        if part_slices is None:
            if any(p % ctx.world_size for p in parts):
                raise ValueError(f"output sizes {list(parts)} do not divide over {ctx.world_size} ranks")
            part_slices = [ctx.even_slice(p) for p in parts]
        self.ctx, self.kernels = ctx, kernels
        self.full_parts = list(parts)
        self.part_slices = list(part_slices)
        self.local_parts = [size for _start, size in self.part_slices]
        self.part_names = list(part_names) if part_names else list(range(len(parts)))
        self._make_weight((sum(self.local_parts), in_features), device, dtype)
        self.weight.weight_loader = self._load
        self.bias = empty_parameter((sum(self.local_parts),), device, dtype) if bias else None
        if self.bias is not None:
            self.bias.weight_loader = self._load

    def _load(self, param: nn.Parameter, loaded: torch.Tensor, shard_id: ShardId, name: str = "") -> None:
        if shard_id is None and len(self.part_names) > 1:
            self._load_fused(param, loaded, name)
            return
        if shard_id is not None and shard_id not in self.part_names:
            raise ValueError(f"checkpoint tensor '{name}' names part '{shard_id}'; this layer's parts are "
                             f"{self.part_names}")
        index = 0 if shard_id is None else self.part_names.index(shard_id)
        start, size = self.part_slices[index]
        # the whole part is narrowed to this rank's rows; a tensor of exactly those rows is taken as it is
        local = loaded.narrow(0, start, size) if loaded.shape[0] == self.full_parts[index] else loaded
        rows = sum(self.local_parts[:index])
        if param is self.weight:
            self.weight_slot.copy(self.weight_slot.buffer().narrow(0, rows, size), local, name)
        else:
            copy_checking_shape(param.data.narrow(0, rows, size), local, name)

    def _load_fused(self, param: nn.Parameter, loaded: torch.Tensor, name: str) -> None:
        """A checkpoint tensor holding every part back to back ([q | k | v]): split, then load each part."""
        full_parts = self.full_parts
        if loaded.shape[0] != sum(full_parts):
            raise ValueError(f"checkpoint tensor '{name}' has {loaded.shape[0]} rows; as the fused parts "
                             f"{self.part_names} it must have {' + '.join(map(str, full_parts))} = "
                             f"{sum(full_parts)} (does its weight rule need a split or a transform?)")
        for part, piece in zip(self.part_names, loaded.split(full_parts, dim=0)):
            self._load(param, piece, part, name)

    def forward(self, x) -> torch.Tensor:
        """x Wᵀ + b; x may be a block's :class:`DeferredNorm` input (this linear then computes the norm)."""
        return self._product(x, self.bias)


class RowParallelLinear(_SlotLinear):
    """y = x Wᵀ with W's input columns split over ranks; partial sums are all-reduced, then bias added."""

    def __init__(self, in_features: int, out_features: int, bias: bool, ctx: ParallelContext, kernels,
                 device: torch.device, dtype: torch.dtype):
        super().__init__()
        if in_features % ctx.world_size:
            raise ValueError(f"input size {in_features} does not divide over {ctx.world_size} ranks")
        self.ctx, self.kernels = ctx, kernels
        self.local_in = in_features // ctx.world_size
        self._make_weight((out_features, self.local_in), device, dtype)
        self.weight.weight_loader = self._load_weight
        self.bias = empty_parameter((out_features,), device, dtype) if bias else None
        if self.bias is not None:
            self.bias.weight_loader = load_whole

    def _load_weight(self, param: nn.Parameter, loaded: torch.Tensor, _shard: ShardId, name: str = "") -> None:
        local = loaded.narrow(1, self.ctx.rank * self.local_in, self.local_in) if loaded.dim() == 2 and \
            loaded.shape[1] == self.local_in * self.ctx.world_size else loaded
        self.weight_slot.copy(self.weight_slot.buffer(), local, name)

    def forward(self, x: torch.Tensor, x_amax: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x_amax``: max |x| of this rank's x, from :meth:`activation_amax` and the op that produced x."""
        out = self.ctx.all_reduce(self._product(x, None, x_amax))
        return out if self.bias is None else out + self.bias

    def gated(self, x: torch.Tensor, activation: str) -> torch.Tensor:
        """forward(act(gate) · up) for x = [gate | up] (this rank's parts), in one op where the kernels fuse it."""
        out = self.ctx.all_reduce(self._gated_product(x, activation, None))
        return out if self.bias is None else out + self.bias


class ReplicatedLinear(_SlotLinear):
    """y = x Wᵀ + b, whole on every rank (small projections: project in/out, routers)."""

    def __init__(self, in_features: int, out_features: int, bias: bool, kernels, device: torch.device,
                 dtype: torch.dtype):
        super().__init__()
        self.kernels = kernels
        self._make_weight((out_features, in_features), device, dtype)
        self.weight.weight_loader = load_into_slot(self.weight_slot)
        self.bias = empty_parameter((out_features,), device, dtype) if bias else None
        if self.bias is not None:
            self.bias.weight_loader = load_whole

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._product(x, self.bias)


class ReplicatedEmbedding(nn.Module):
    """An embedding table whole on every rank (learned positions)."""

    def __init__(self, vocab_size: int, hidden_size: int, device: torch.device, dtype: torch.dtype):
        super().__init__()
        self.weight = empty_parameter((vocab_size, hidden_size), device, dtype)
        self.weight.weight_loader = load_whole

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(token_ids, self.weight)


class VocabParallelEmbedding(nn.Module):
    """Token embedding whose vocabulary rows are split over ranks; also the LM head (``logits``).

    The vocabulary is padded to a multiple of the world size; padding rows are zero and their logits are
    cut off. A rank looks up the tokens in its range (others give zeros) and the ranks' rows are summed."""

    def __init__(self, vocab_size: int, hidden_size: int, ctx: ParallelContext, device: torch.device,
                 dtype: torch.dtype, bias: bool = False):
        super().__init__()
        self.ctx, self.vocab_size = ctx, vocab_size
        padded = -(-vocab_size // ctx.world_size) * ctx.world_size
        self.start, self.local_rows = ctx.even_slice(padded)
        self._make_table((self.local_rows, hidden_size), device, dtype)
        self.weight.weight_loader = self._load
        self.bias = empty_parameter((self.local_rows,), device, dtype) if bias else None
        if self.bias is not None:
            self.bias.weight_loader = self._load

    def _make_table(self, shape: Sequence[int], device: torch.device, dtype: torch.dtype) -> None:
        self.weight = empty_parameter(shape, device, dtype)

    def _load(self, param: nn.Parameter, loaded: torch.Tensor, _shard: ShardId, name: str = "") -> None:
        if loaded.shape[0] != self.vocab_size:
            raise ValueError(f"checkpoint tensor '{name}' has shape {tuple(loaded.shape)}, expected "
                             f"{(self.vocab_size, *param.shape[1:])}")
        rows = self._rows_held()
        param.data.zero_()
        copy_checking_shape(param.data.narrow(0, 0, rows), loaded.narrow(0, self.start, rows), name)

    def _rows_held(self) -> int:
        """This rank's rows that hold vocabulary entries (the rest pad the vocabulary to the world size)."""
        return max(0, min(self.local_rows, self.vocab_size - self.start))

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        if self.ctx.world_size == 1:
            return nn.functional.embedding(token_ids, self.weight)
        local_ids = token_ids - self.start
        mine = (local_ids >= 0) & (local_ids < self.local_rows)
        hidden = nn.functional.embedding(local_ids.clamp(0, self.local_rows - 1), self.weight)
        return self.ctx.all_reduce(hidden * mine.unsqueeze(-1).to(hidden.dtype))

    def logits(self, hidden: torch.Tensor, bias: Optional[torch.Tensor], kernels) -> torch.Tensor:
        """float32 logits [S, vocab]: each rank scores its rows (``kernels``' linear op), then the ranks'
        columns are gathered."""
        return self._gathered(kernels.linear(hidden, self.weight, bias))

    def _gathered(self, local: torch.Tensor) -> torch.Tensor:
        return self.ctx.all_gather_last(local.float())[..., :self.vocab_size]


class VocabParallelHead(VocabParallelEmbedding):
    """An LM head of its own (not tied to the embedding), its vocabulary rows split over ranks as the
    embedding's. In a model built quantizing, its weight is quantized as it loads, as a linear layer's is, and
    the logits come from ``quant_linear``: a decode step reads the head whole (Llama-3's 128K vocabulary:
    1 GB in bf16, about a sixteenth of W2's bytes). A head tied to the embedding stays in full precision, as
    the embedding's gather needs it."""

    def _make_table(self, shape: Sequence[int], device: torch.device, dtype: torch.dtype) -> None:
        self.weight_slot = WeightSlot(shape, device, dtype, building_mode())
        self.weight = self.weight_slot.param

    def _load(self, param: nn.Parameter, loaded: torch.Tensor, shard: ShardId, name: str = "") -> None:
        if param is not self.weight:  # the head's bias
            return super()._load(param, loaded, shard, name)
        if loaded.shape[0] != self.vocab_size:
            raise ValueError(f"checkpoint tensor '{name}' has shape {tuple(loaded.shape)}, expected "
                             f"{(self.vocab_size, *param.shape[1:])}")
        rows, buffer = self._rows_held(), self.weight_slot.buffer()
        self.weight_slot.copy(buffer.narrow(0, 0, rows), loaded.narrow(0, self.start, rows), name)
        if rows < self.local_rows:  # the padding rows arrive as zeros, so that the slot sees every row
            padding = loaded.new_zeros((self.local_rows - rows, *loaded.shape[1:]))
            self.weight_slot.copy(buffer.narrow(0, rows, self.local_rows - rows), padding, name)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        raise TypeError("an LM head of its own scores hidden states (logits); it embeds no tokens")

    def logits(self, hidden: torch.Tensor, bias: Optional[torch.Tensor], kernels) -> torch.Tensor:
        quantized = self.weight_slot.quantized
        if quantized is None:
            return super().logits(hidden, bias, kernels)
        return self._gathered(kernels.quant_linear(hidden, quantized, bias))
