"""Checkpoint tensors that are read only where they are used, so a tensor-parallel rank reads its shard.

A :class:`LazySlice` stands for one checkpoint tensor without reading it. The view operations a
parameter's ``weight_loader`` uses to find its rank's part (``narrow``, ``split``, ``chunk``,
``select``/integer indexing, ``t``) only narrow the ranges it stands for; the read happens when the
part is copied into the parameter, through safetensors' ``get_slice(name)[ranges]`` (``.bin`` files:
the same ranges of the memory-mapped tensor). Any other use (a torch function, a tensor method) reads
the ranges the view stands for and goes on with a real tensor, so a loader written for tensors still
works: it only reads more than it needs.

``ReadCounter`` tallies the bytes read, so loading can report (and tests can measure) each rank's share.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import torch

# safetensors' dtype names (PySafeSlice.get_dtype())
_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}


@dataclass
class ReadCounter:
    """Bytes of checkpoint tensors a loader used (whole tensors) and actually read (their slices)."""

    checkpoint_bytes: int = 0
    bytes_read: int = 0

    @property
    def share_read(self) -> float:
        return self.bytes_read / self.checkpoint_bytes if self.checkpoint_bytes else 0.0


class LazySlice:
    """A view of part of a checkpoint tensor, read on use. ``source`` is indexed with a tuple of one
    slice or int per source dimension (a safetensors ``PySafeSlice`` or a memory-mapped tensor)."""

    __slots__ = ("_source", "_ranges", "_dims", "dtype", "_counter")

    def __init__(self, source: Any, shape: Sequence[int], dtype: torch.dtype, counter: Optional[ReadCounter] = None,
                 ranges: Optional[tuple[tuple[int, int], ...]] = None, dims: Optional[tuple[int, ...]] = None):
        self._source, self.dtype, self._counter = source, dtype, counter
        self._ranges = ranges if ranges is not None else tuple((0, int(n)) for n in shape)
        self._dims = dims if dims is not None else tuple(range(len(shape)))  # source dims in view order

    @classmethod
    def of_safetensors(cls, safe_slice: Any, counter: Optional[ReadCounter] = None) -> "LazySlice":
        dtype = _SAFETENSORS_DTYPES.get(safe_slice.get_dtype())
        if dtype is None:
            raise ValueError(f"checkpoint dtype {safe_slice.get_dtype()} is not supported")
        return cls(safe_slice, safe_slice.get_shape(), dtype, counter)

    @classmethod
    def of_tensor(cls, tensor: torch.Tensor, counter: Optional[ReadCounter] = None) -> "LazySlice":
        return cls(tensor, tensor.shape, tensor.dtype, counter)

    # ---- shape ----
    @property
    def shape(self) -> torch.Size:
        return torch.Size(self._ranges[d][1] for d in self._dims)

    def size(self, dim: Optional[int] = None):
        return self.shape if dim is None else self.shape[dim]

    def dim(self) -> int:
        return len(self._dims)

    ndim = property(dim)

    def numel(self) -> int:
        return self.shape.numel()

    def element_size(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()

    def __len__(self) -> int:
        return self.shape[0]

    # ---- views: narrow the ranges, read nothing ----
    def narrow(self, dim: int, start: int, length: int) -> "LazySlice":
        dim = self._axis(dim)
        size = self.shape[dim]
        if start < 0 or length < 0 or start + length > size:
            raise IndexError(f"narrow({dim}, {start}, {length}) is outside a dimension of size {size}")
        source_dim = self._dims[dim]
        ranges = list(self._ranges)
        ranges[source_dim] = (ranges[source_dim][0] + start, length)
        return LazySlice(self._source, (), self.dtype, self._counter, tuple(ranges), self._dims)

    def select(self, dim: int, index: int) -> "LazySlice":
        dim = self._axis(dim)
        index = index + self.shape[dim] if index < 0 else index
        narrowed = self.narrow(dim, index, 1)
        dims = self._dims[:dim] + self._dims[dim + 1:]  # the source dim is read with an int: dropped
        return LazySlice(self._source, (), self.dtype, self._counter, narrowed._ranges, dims)

    def split(self, split_size: Union[int, Sequence[int]], dim: int = 0) -> tuple["LazySlice", ...]:
        size = self.shape[self._axis(dim)]
        sizes = ([split_size] * (-(-size // split_size)) if isinstance(split_size, int) else list(split_size))
        if isinstance(split_size, int):
            sizes[-1] = size - split_size * (len(sizes) - 1)
        if sum(sizes) != size:
            raise ValueError(f"split sizes {sizes} do not add up to the dimension's size {size}")
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        return tuple(self.narrow(dim, start, n) for start, n in zip(starts, sizes))

    def chunk(self, chunks: int, dim: int = 0) -> tuple["LazySlice", ...]:
        return self.split(-(-self.shape[self._axis(dim)] // chunks), dim)

    def t(self) -> "LazySlice":
        if self.dim() != 2:
            raise ValueError(f"t() needs a matrix, got shape {tuple(self.shape)}")
        return LazySlice(self._source, (), self.dtype, self._counter, self._ranges, self._dims[::-1])

    def __getitem__(self, key: Any):
        if isinstance(key, int):
            return self.select(0, key)
        return self.read()[key]  # anything fancier: read this view, index the tensor

    def _axis(self, dim: int) -> int:
        if not -self.dim() <= dim < self.dim():
            raise IndexError(f"dimension {dim} is out of range for a {self.dim()}-d tensor")
        return dim % self.dim()

    # ---- reading ----
    def read(self) -> torch.Tensor:
        """The tensor this view stands for; only its ranges are read from the checkpoint."""
        kept = sorted(self._dims)
        index = tuple(slice(start, start + n) if d in kept else start for d, (start, n) in enumerate(self._ranges))
        tensor = self._source[index]
        if not isinstance(tensor, torch.Tensor):  # a source of another framework's arrays
            tensor = torch.as_tensor(tensor)
        if self._counter is not None:
            self._counter.bytes_read += tensor.numel() * tensor.element_size()
        order = [kept.index(d) for d in self._dims]
        return tensor.permute(order) if order != sorted(order) else tensor

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        """``dst.copy_(view)`` and any other torch call: read the views among the arguments first."""
        return func(*_read_all(args), **{k: _read_all(v) for k, v in (kwargs or {}).items()})

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.read(), name)  # a tensor method the view does not offer: read, then call it

    def __repr__(self) -> str:
        return f"LazySlice(shape={tuple(self.shape)}, dtype={self.dtype})"


def _read_all(value: Any) -> Any:
    if isinstance(value, LazySlice):
        return value.read()
    if isinstance(value, (list, tuple)):
        return type(value)(_read_all(v) for v in value)
    return value

