"""Checkpoints shipped quantized (config.json's ``quantization_config``): which schemes load as they are
stored, how their scales are found and laid out, and a clear error for every other scheme.

Loaded without re-quantizing (the codes and scales as shipped, run weight-only: ``SHIPPED_MODE``, or, with one
scale per row and quantization_mode "fp8", in FP8 GEMMs on dynamic activations):
* transformers' FP8 (``quant_method: "fp8"``, its ``FineGrainedFP8Config``): float8_e4m3fn weights, each
  with a float32 ``<weight>_scale_inv`` per block of ``weight_block_size`` [rows, columns] (one per tensor
  without a block size); value = code × scale (transformers' ``Fp8Dequantize``). ``activation_scheme``
  "dynamic" only (static activation scales are refused by name).
* compressed-tensors' float8 (``quant_method: "compressed-tensors"``, format "float-quantized"), read with
  the compressed-tensors package's own ``QuantizationConfig``: 8-bit float weights with a
  ``<weight>_scale`` per tensor or per output channel, input activations dynamic or absent.
Which layers are quantized is read from the tensors themselves: a weight stored in e4m3 with its scale
tensor is a shipped weight; one stored in another dtype (``modules_to_not_convert``, ``ignore``) loads as a
plain weight. A shipped weight of a parameter the engine keeps in the model's dtype (a router, an
embedding) is dequantized (exactly, in float32) as it loads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
from safetensors import safe_open

from mii_core.model.quantization import SHIPPED_MODE, QuantizedWeight, ShippedFormat

SUPPORTED = ("transformers' FP8 (quant_method 'fp8', activation_scheme 'dynamic', block-wise or per-tensor "
             "scales) and compressed-tensors' float8 weights (format 'float-quantized', weights num_bits 8 "
             "type 'float' with strategy 'tensor', 'channel' or 'block', input_activations dynamic or absent)")
CT_EXTRA = "compressed-tensors"  # the extra of mii-core that installs the compressed-tensors package


@dataclass(frozen=True)
class ShippedFP8:
    """How a checkpoint stores its FP8 weights: ``method`` (config.json's quant_method), the suffix that
    names a weight's scale tensor, and the [rows, columns] a scale covers (None: per tensor or channel)."""

    method: str
    scale_suffix: str
    block: Optional[tuple[int, int]] = None

    @property
    def group_size(self) -> Optional[int]:
        """How many input columns share a scale (None: a whole row)."""
        return self.block[1] if self.block else None

    def layer_format(self, quantization_mode: Optional[str]) -> ShippedFormat:
        """What the model's layers need to know: the column groups, and the mode the codes run in (unset:
        weight-only)."""
        return ShippedFormat(self.group_size, quantization_mode or SHIPPED_MODE)

    def scale_rows(self, scale: torch.Tensor, weight_shape: Sequence[int], name: str) -> torch.Tensor:
        """The scale tensor ``name`` of a weight [..., N, K] as float32 rows [..., N, scale columns]: one column
        per tensor or channel; block-wise, each block's scales repeated over the block's rows (so that a
        layer's loader splits and slices them as it does the codes)."""
        *lead, rows, columns = weight_shape
        scale = scale.float()
        if self.block is None:
            if scale.numel() in (1, math.prod(lead)):  # per tensor (each expert's, in a stack)
                return scale.reshape(*([1] * len(lead) if scale.numel() == 1 else lead), 1, 1) \
                    .expand(*lead, rows, 1).contiguous()
            if scale.numel() == math.prod(lead) * rows:  # per output channel
                return scale.reshape(*lead, rows, 1).contiguous()
        else:
            block_rows, block_columns = self.block
            if tuple(scale.shape) == (*lead, -(-rows // block_rows), -(-columns // block_columns)):
                return scale.repeat_interleave(block_rows, dim=-2)[..., :rows, :].contiguous()
        layout = f"blocks of {list(self.block)}" if self.block else "one scale per tensor or per output channel"
        raise ValueError(f"scale tensor '{name}' has shape {tuple(scale.shape)}, which does not fit its weight "
                         f"{tuple(weight_shape)} with {layout} (quant_method {self.method!r}); the checkpoint's "
                         "config.json and its tensors disagree")

    def dequantize(self, codes: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """float32 values of shipped ``codes`` [..., N, K] with their ``scale_rows``."""
        group = self.group_size
        weight = QuantizedWeight(codes, rows if group else rows.squeeze(-1), SHIPPED_MODE, codes.shape[-1], group)
        return weight.dequantize(torch.float32)


def read_shipped_fp8(hf_config: dict, model_path: Path) -> Optional[ShippedFP8]:
    """The shipped FP8 format of a checkpoint (None: not quantized); any scheme we cannot read is a
    ValueError naming it and the supported ones."""
    quantization = hf_config.get("quantization_config")
    if not quantization:
        return None
    method = quantization.get("quant_method", "unnamed") if isinstance(quantization, dict) else "unreadable"
    if method == "fp8":
        return _transformers_fp8(quantization, model_path)
    if method == "compressed-tensors":
        return _compressed_tensors_fp8(quantization, model_path)
    raise _unsupported(model_path, f"quant_method {method!r}")


def _unsupported(model_path: Path, what: str) -> ValueError:
    return ValueError(f"{model_path}/config.json has a quantization_config with {what}, which cannot be read: "
                      f"checkpoints shipped quantized load when they are {SUPPORTED}; otherwise load the "
                      "unquantized checkpoint and set quantization_mode ('fp8', 'wf8af16' or 'wf6af16') to "
                      "quantize it as it loads")


def _transformers_fp8(config: dict, model_path: Path) -> ShippedFP8:
    """transformers' FineGrainedFP8Config, as its ``to_dict`` writes it."""
    for key, readable in (("activation_scheme", "dynamic"), ("scale_fmt", "float"), ("expert_dtype", "fp8")):
        if config.get(key, readable) != readable:
            raise _unsupported(model_path, f"quant_method 'fp8' and {key} {config[key]!r} (only {readable!r})")
    block = config.get("weight_block_size")
    if block is None:
        return ShippedFP8("fp8", "_scale_inv")
    if not (isinstance(block, (list, tuple)) and len(block) == 2
            and all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in block)):
        raise _unsupported(model_path, f"quant_method 'fp8' and weight_block_size {block!r} (expected two "
                                       "positive integers [rows, columns])")
    return ShippedFP8("fp8", "_scale_inv", (block[0], block[1]))


def _compressed_tensors_fp8(config: dict, model_path: Path) -> ShippedFP8:
    """compressed-tensors' config, read by its own pydantic ``QuantizationConfig``."""
    try:
        from compressed_tensors.quantization import QuantizationConfig
    except ImportError:
        raise ValueError(f"{model_path}/config.json is a compressed-tensors checkpoint; reading it needs the "
                         f"compressed-tensors package: pip install 'mii-core[{CT_EXTRA}]'") from None
    for extra in ("sparsity_config", "transform_config"):
        if config.get(extra):
            raise _unsupported(model_path, f"quant_method 'compressed-tensors' and a {extra}")
    try:
        parsed = QuantizationConfig.model_validate(config)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise ValueError(f"{model_path}/config.json: compressed-tensors cannot read its quantization_config: "
                         f"{exc}") from None
    if parsed.kv_cache_scheme is not None:
        raise _unsupported(model_path, "compressed-tensors' kv_cache_scheme (use kv_cache_dtype='fp8' instead)")
    for name, scheme in parsed.config_groups.items():
        problem = _unreadable_ct_scheme(scheme, parsed.format)
        if problem:
            raise _unsupported(model_path, f"compressed-tensors config group {name!r}: {problem}")
    return ShippedFP8("compressed-tensors", "_scale", _ct_block(parsed, model_path))


def _ct_block(parsed, model_path: Path) -> Optional[tuple[int, int]]:
    """The [rows, columns] of strategy 'block' weights (DeepSeek-V3's layout: a scale per block, value = code ×
    scale, as transformers' block-wise FP8), None for per-tensor or per-channel ones; every group alike."""
    blocks = {tuple(scheme.weights.block_structure) if scheme.weights.strategy == "block" else None
              for scheme in parsed.config_groups.values()}
    if len(blocks) > 1:
        raise _unsupported(model_path, "compressed-tensors config groups of different weight layouts "
                                       f"{sorted(map(str, blocks))}")
    block = blocks.pop() if blocks else None
    if block is not None and (len(block) != 2 or min(block) < 1):
        raise _unsupported(model_path, f"compressed-tensors block_structure {list(block)} (expected [rows, columns])")
    return block


def _unreadable_ct_scheme(scheme, model_format: Optional[str]) -> Optional[str]:
    """Why one compressed-tensors scheme cannot be read (None: it can)."""
    weights, inputs = scheme.weights, scheme.input_activations
    if weights is None:
        return "no weight quantization (activations only)"
    described = f"weights num_bits {weights.num_bits} type {weights.type!r} strategy {weights.strategy!r}"
    if weights.num_bits != 8 or weights.type != "float" or weights.strategy not in ("tensor", "channel", "block") \
            or not weights.symmetric:
        return described
    if (scheme.format or model_format) != "float-quantized":
        return f"format {scheme.format or model_format!r}"
    if inputs is not None and not inputs.dynamic:
        return "static input_activations (scales stored in the checkpoint); only dynamic or absent ones"
    if scheme.output_activations is not None:
        return "output_activations quantization"
    return None


class ShippedScales:
    """The scale tensors of a shipped FP8 checkpoint, found by name (a weight's name + the suffix) and read
    when their weight arrives, so that codes and scales load together."""

    def __init__(self, files: Sequence[Path], scheme: ShippedFP8):
        self.scheme = scheme
        names: dict[str, Path] = {}
        for file in files:
            if file.suffix != ".safetensors":
                raise ValueError(f"'{file}': checkpoints shipped in FP8 are read from .safetensors files only")
            with safe_open(str(file), framework="pt") as handle:
                names.update((name, file) for name in handle.keys())
        suffix = scheme.scale_suffix
        self._files = {name: file for name, file in names.items()
                       if name.endswith(suffix) and name[:-len(suffix)] in names}

    def is_scale(self, name: str) -> bool:
        return name in self._files

    def rows_for(self, weight_name: str, weight_shape: Sequence[int]) -> torch.Tensor:
        """The scales of shipped weight ``weight_name`` as rows (``ShippedFP8.scale_rows``)."""
        name = weight_name + self.scheme.scale_suffix
        file = self._files.get(name)
        if file is None:
            raise ValueError(f"checkpoint tensor '{weight_name}' is stored in FP8 (e4m3) but the checkpoint has no "
                             f"scale tensor '{name}' for it; restore it from the model's original files")
        with safe_open(str(file), framework="pt") as handle:
            scale = handle.get_tensor(name)
        return self.scheme.scale_rows(scale, weight_shape, name)


def check_shipped_options(shipped: Optional[ShippedFP8], quantization_mode: Optional[str], tensor_parallel: int,
                          model_path: Path) -> None:
    """A shipped checkpoint runs its own codes: weight-only with quantization_mode unset (or that mode), or,
    with one scale per row, "fp8" (FP8 GEMMs on dynamic activations); any other mode would mean
    re-quantizing. Block-wise scales are not split over ranks."""
    if shipped is None:
        return
    modes = (None, SHIPPED_MODE) if shipped.block else (None, SHIPPED_MODE, "fp8")
    if quantization_mode not in modes:
        raise ValueError(f"quantization_mode={quantization_mode!r} with {model_path}, a checkpoint shipped quantized "
                         f"(quant_method {shipped.method!r}): its FP8 weights load as they are stored and run "
                         f"weight-only with quantization_mode unset (or {SHIPPED_MODE!r})"
                         + (f"; its block-wise scales (weight_block_size {list(shipped.block)}) cannot feed 'fp8' "
                            "GEMMs" if shipped.block else ", or with FP8 GEMMs on dynamic activations with 'fp8'")
                         + "; load the unquantized checkpoint to quantize it in another mode")
    if shipped.block is not None and tensor_parallel > 1:
        raise ValueError(f"tensor_parallel={tensor_parallel} with {model_path}, whose FP8 weights have block-wise "
                         f"scales (weight_block_size {list(shipped.block)}): block-wise checkpoints run on one rank "
                         "(tensor_parallel=1); per-tensor or per-channel FP8 checkpoints can be split over ranks")
