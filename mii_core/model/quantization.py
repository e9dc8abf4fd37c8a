"""Quantized weights: the typed object the ``quant_linear`` / ``quant_moe_experts`` ops receive, how a
full-precision weight becomes one, and the mode a model is being built in.

What is quantized: every linear layer's weight (q/k/v/o, the MLPs, project in/out), every MoE expert's
matrices, and the LM head where it is not tied to the embedding (``VocabParallelHead``: a decode step reads it
whole; held-out perplexity of the quality test's trained model with the head quantized as well: fp8 +0.02%,
wf6af16 +0.24%, 2026-12-03). What is not: embeddings (a gather; so neither is a head tied to them), norms, biases,
MoE routers and the shared-expert gate (a few [E, H] values that decide the routing): they stay in the
model's dtype.

Scales: one float32 scale per output channel (row of [N, K]; per expert and row for the stacked experts),
``absmax(row) / largest code``; under tensor parallelism every rank scales its own rows (or its own partial
sums) with no exchange. Except mode "fp8"'s linear layers: one scale per tensor (``absmax / 448``, stored
repeated per row, ``per_tensor`` set; per rank's shard under tensor parallelism), vLLM's dynamic FP8 layout.
Its steps of many tokens run one ``torch._scaled_mm`` with both scales and the bias in its epilogue and
x's dtype out; a per-channel scale there was a float32 output and three more passes over it (on the H200
fp8 W3 ran at 0.81x bf16 that way), and cuBLAS's row-wise-scaled FP8 GEMM ran at half the per-tensor rate
(608 against 1,201 TFLOP/s, issue 18). The experts keep per-row scales; in mode "fp8" their steps of many
tokens quantize their activations per tensor too (x, then act(gate) · up over the step's picks: under tensor
parallelism over a rank's own columns of it, as a row-parallel linear's input), weight-only otherwise.

The mode is chosen while the model is built (``building_quantized(mode)`` around ``policy.build_model``),
so no architecture plugin passes it along: the core's linear layers read it when they are made.

Shipped FP8 (a checkpoint stored quantized: transformers' block-wise FP8, compressed-tensors' float8): the
weights load as they are stored, e4m3 codes with the scales the checkpoint ships, in mode ``SHIPPED_MODE``
(weight-only). Block-wise scales are kept per output row and group of ``group_size`` input columns
(scale [..., N, ceil(K / group_size)]): one block's scale repeated over its rows, so fused parts (q|k|v)
and a rank's rows slice the scales as they slice the codes.
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from typing import Iterator, Optional

import torch

from mii_core.config.engine import QUANTIZATION_MODES
from mii_core.model import quant_formats as fmt

# "fp8": a step of more tokens than this quantizes its activations (per tensor, dynamic) for the FP8 GEMM;
# a step of this many or fewer is weight-only (bound by reading the weights: a GEMV that upcasts them)
FP8_WEIGHT_ONLY_MAX_TOKENS = 8
# shipped FP8 weights run weight-only: the checkpoint's codes and scales, activations in the model's dtype
SHIPPED_MODE = "wf8af16"

_BUILDING_MODE: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("quantization_mode", default=None)


@dataclass(frozen=True)
class ShippedFormat:
    """Weights that arrive already quantized (e4m3 codes, then their scales): ``group_size`` input columns
    share a scale within a row (None: the whole row shares one); ``mode`` the e4m3 mode they run in
    (``SHIPPED_MODE``, or "fp8" for FP8 GEMMs on dynamic activations where the scales are one per row)."""

    group_size: Optional[int] = None
    mode: str = SHIPPED_MODE

    def scale_columns(self, in_features: int) -> int:
        """How many scales a row of ``in_features`` columns has."""
        return 1 if self.group_size is None else -(-in_features // self.group_size)


_BUILDING_SHIPPED: contextvars.ContextVar[Optional[ShippedFormat]] = contextvars.ContextVar("shipped_format",
                                                                                           default=None)


@dataclass(frozen=True)
class QuantizedWeight:
    """A [..., N, K] weight in ``mode``. ``data``: float8_e4m3fn [..., N, K] (fp8, wf8af16) or uint8
    [..., N, 3·Kp/4] e3m2 codes in bit planes (wf6af16, K padded to a multiple of 64; layout in quant_formats:
    rows and experts slice as views, K never: each tensor-parallel rank packs its own columns).
    ``scale``: float32 [..., N], or with ``group_size`` (shipped block-wise FP8) [..., N, ceil(K / group_size)]:
    column k of a row is scaled by that row's scale k // group_size. ``in_features``: K (the packed rows do not
    say it)."""

    data: torch.Tensor
    scale: torch.Tensor
    mode: str
    in_features: int
    group_size: Optional[int] = None
    per_tensor: bool = False  # every row's scale is one value (``scale[..., 0]`` is the tensor's)

    @property
    def shape(self) -> tuple[int, ...]:
        """The full-precision shape [..., N, K]."""
        return (*self.data.shape[:-1], self.in_features)

    @property
    def quantizes_activations(self) -> bool:
        return self.mode == "fp8"

    def quantizes_activations_at(self, tokens: int) -> bool:
        """Whether a step of ``tokens`` tokens quantizes its activations for this weight (mode "fp8", one scale
        per row, more than ``FP8_WEIGHT_ONLY_MAX_TOKENS`` tokens): the references and the kernels ask alike."""
        return self.quantizes_activations and self.group_size is None and tokens > FP8_WEIGHT_ONLY_MAX_TOKENS

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight's values [..., N, K] (each code times its row's scale, in float32, then ``dtype``)."""
        if self.mode == "wf6af16":
            values = fmt.decode_e3m2(fmt.unpack_fp6(self.data, self.in_features))
        else:
            values = self.data.float()
        return (values * self.column_scales()).to(dtype)

    def column_scales(self) -> torch.Tensor:
        """float32 scales broadcastable to [..., N, K]: [..., N, 1], or each group's scale repeated over its
        columns [..., N, K]."""
        if self.group_size is None:
            return self.scale.unsqueeze(-1)
        return self.scale.repeat_interleave(self.group_size, dim=-1)[..., :self.in_features]

    def select(self, index: int) -> "QuantizedWeight":
        """One matrix of a stack (an expert of [E, N, K])."""
        return QuantizedWeight(self.data[index], self.scale[index], self.mode, self.in_features, self.group_size,
                               self.per_tensor)

    def nbytes(self) -> int:
        return self.data.numel() * self.data.element_size() + self.scale.numel() * self.scale.element_size()


def scales_per_tensor(weight: torch.Tensor, mode: str) -> bool:
    """Whether ``weight`` takes one scale per tensor: mode "fp8"'s linear layers (2-D), see the module doc."""
    return mode == "fp8" and weight.dim() == 2


def quantize_weight(weight: torch.Tensor, mode: str, chunk_elements: int = 1 << 24) -> QuantizedWeight:
    """``weight`` [..., N, K] (any float dtype) quantized row by row in ``mode``, a chunk of rows at a time
    (float32 temporaries of at most ``chunk_elements`` values, whatever the weight's size)."""
    if mode not in QUANTIZATION_MODES:
        raise ValueError(f"unknown quantization mode {mode!r}; choose one of {', '.join(QUANTIZATION_MODES)}")
    rows = weight.reshape(-1, weight.shape[-1])
    k = rows.shape[1]
    width = fmt.fp6_packed_bytes(k) if mode == "wf6af16" else k
    dtype = torch.uint8 if mode == "wf6af16" else torch.float8_e4m3fn
    data = torch.empty((rows.shape[0], width), dtype=dtype, device=weight.device)
    scale = torch.empty(rows.shape[0], dtype=torch.float32, device=weight.device)
    per_tensor = scales_per_tensor(weight, mode)
    if per_tensor:
        scale.copy_(fmt.channel_scales(rows.abs().amax()[None, None], fmt.FP8_MAX).expand_as(scale))
    step = max(1, chunk_elements // max(k, 1))
    for start in range(0, rows.shape[0], step):
        chunk = slice(start, start + step)
        data[chunk], scale[chunk] = _quantize_rows(rows[chunk].float(), mode, scale[chunk] if per_tensor else None)
    return QuantizedWeight(data.view(*weight.shape[:-1], width), scale.view(weight.shape[:-1]), mode, k,
                           per_tensor=per_tensor)


def _quantize_rows(w: torch.Tensor, mode: str,
                   scale: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes, float32 scales) of float32 rows [R, K], each row by its own absmax unless ``scale`` is given."""
    if mode == "wf6af16":
        scale = fmt.channel_scales(w, fmt.FP6_MAX)
        return fmt.pack_fp6(fmt.encode_e3m2(w / scale.unsqueeze(-1))), scale
    scale = fmt.channel_scales(w, fmt.FP8_MAX) if scale is None else scale
    return fmt.to_e4m3(w / scale.unsqueeze(-1)), scale


@contextlib.contextmanager
def building_quantized(mode: Optional[str], shipped: Optional[ShippedFormat] = None) -> Iterator[None]:
    """Linear layers and experts made inside this block quantize their weights in ``mode`` as they load, or
    (``shipped``) take the codes and scales a checkpoint stores quantized as they are."""
    if mode is not None and shipped is not None:
        raise ValueError(f"a model is built either quantizing in mode {mode!r} or from shipped codes, not both")
    token, shipped_token = _BUILDING_MODE.set(mode), _BUILDING_SHIPPED.set(shipped)
    try:
        yield
    finally:
        _BUILDING_MODE.reset(token)
        _BUILDING_SHIPPED.reset(shipped_token)


def building_mode() -> Optional[str]:
    """The quantization mode of the model being built (None: full precision)."""
    return _BUILDING_MODE.get()



def building_shipped() -> Optional[ShippedFormat]:
    """How the shipped FP8 codes of the model being built are scaled (None: no shipped codes)."""
    return _BUILDING_SHIPPED.get()
