"""Tiny checkpoints shipped in FP8, written by each format's own library from a full-precision tiny checkpoint,
and their dequantized copies (the oracle's weights), dequantized by that same library.

* transformers' FP8: each tensor through transformers' own ``Fp8Quantize`` op (what its FP8 quantizer runs
  on every weight it converts; the quantizer itself refuses to start without a GPU), config.json gets
  ``FineGrainedFP8Config(...).to_dict()``; dequantized by transformers' ``Fp8Dequantize``.
* compressed-tensors' float8: ``apply_quantization_config`` on transformers' model, each weight's scale from
  compressed-tensors' ``calculate_qparams`` over its min/max (what a min-max observer computes),
  ``ModelCompressor.compress_model`` + ``save_pretrained`` + ``update_config``; dequantized by
  compressed-tensors' ``dequantize``.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Sequence

import torch
from safetensors.torch import load_file, save_file

Dequantize = Callable[[str, torch.Tensor, torch.Tensor], torch.Tensor]  # (weight name, codes, scale) -> values


def write_transformers_fp8(source: Path, dest: Path, block: Sequence[int] | None, not_convert: Sequence[str]) -> Path:
    """``source`` with every matrix but the embeddings, the head and ``not_convert`` modules in transformers'
    block-wise FP8 (tensors whose sides the block does not divide stay unquantized, as transformers leaves
    them); ``block`` None: one scale per tensor."""
    from transformers import FineGrainedFP8Config
    from transformers.integrations.finegrained_fp8 import Fp8Quantize

    config = FineGrainedFP8Config(weight_block_size=list(block) if block else None,
                                  modules_to_not_convert=list(not_convert))
    quantize = Fp8Quantize(SimpleNamespace(quantization_config=config))
    shutil.copytree(source, dest)
    for file in sorted(dest.glob("*.safetensors")):
        stored = {}
        for name, tensor in load_file(str(file)).items():
            module = name.rsplit(".", 1)[0]
            if tensor.dim() >= 2 and "embed" not in name and module not in not_convert:
                stored.update(quantize.convert({name: tensor}))
            else:
                stored[name] = tensor
        save_file(stored, str(file), metadata={"format": "pt"})
    _set_quantization_config(dest, config.to_dict())
    return dest


def transformers_fp8_dequantize(_name: str, codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    from transformers import FineGrainedFP8Config
    from transformers.integrations.finegrained_fp8 import Fp8Dequantize

    dequantize = Fp8Dequantize(SimpleNamespace(quantization_config=FineGrainedFP8Config()))
    return dequantize._dequantize_one(codes, scale, torch.float32)


CT_BLOCK = [16, 32]  # strategy "block": rows, columns per scale (FP8_BLOCK's [128, 128], shrunk to the tiny models)


def write_compressed_tensors_fp8(source: Path, dest: Path, strategy: str, ignore: Sequence[str]) -> Path:
    """``source``'s linear layers (all but ``ignore``) in compressed-tensors' float8, weights per ``strategy``
    ("tensor", "channel", or "block" of ``CT_BLOCK``), dynamic per-token input activations (its FP8_DYNAMIC
    preset's shape)."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (QuantizationArgs, QuantizationConfig, QuantizationScheme,
                                                 apply_quantization_config)
    from compressed_tensors.quantization.utils import calculate_qparams
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float32)
    weights = _ct_weight_args(strategy)
    inputs = QuantizationArgs(num_bits=8, type="float", strategy="token", symmetric=True, dynamic=True)
    scheme = QuantizationScheme(targets=["Linear"], weights=weights, input_activations=inputs)
    apply_quantization_config(model, QuantizationConfig(config_groups={"group_0": scheme}, ignore=list(ignore)))
    for module in model.modules():
        if hasattr(module, "weight_scale"):
            w = module.weight.data
            if strategy == "block":
                low, high = _block_extremes(w, CT_BLOCK)
            else:
                reduce = dict(dim=-1, keepdim=True) if strategy == "channel" else {}
                low, high = w.amin(**reduce), w.amax(**reduce)
            scale, _zero = calculate_qparams(low, high, module.quantization_scheme.weights)
            module.weight_scale.data.copy_(scale.reshape(module.weight_scale.shape))
    compressor = ModelCompressor.from_pretrained_model(model, quantization_format="float-quantized")
    compressor.compress_model(model)
    model.save_pretrained(str(dest))
    compressor.update_config(str(dest))
    for extra in source.iterdir():  # the tokenizer files
        if not (dest / extra.name).exists():
            shutil.copy(extra, dest / extra.name)
    return dest


def _ct_weight_args(strategy: str):
    from compressed_tensors.quantization import QuantizationArgs

    block = {"block_structure": CT_BLOCK} if strategy == "block" else {}
    return QuantizationArgs(num_bits=8, type="float", strategy=strategy, symmetric=True, dynamic=False, **block)


def _block_extremes(w: torch.Tensor, block: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each [rows, columns] block's min and max ([ceil(N / rows), ceil(K / columns)]; edge blocks partial)."""
    rows, columns = block
    n, k = w.shape
    padded = torch.nn.functional.pad(w, (0, -k % columns, 0, -n % rows), value=float("nan"))
    blocks = padded.reshape(padded.shape[0] // rows, rows, padded.shape[1] // columns, columns).transpose(1, 2)
    flat = blocks.reshape(*blocks.shape[:2], -1)
    low = torch.where(flat.isnan(), float("inf"), flat).amin(-1)
    high = torch.where(flat.isnan(), -float("inf"), flat).amax(-1)
    return low, high


def compressed_tensors_dequantize(strategy: str) -> Dequantize:
    from compressed_tensors.quantization.lifecycle.forward import dequantize

    args = _ct_weight_args(strategy)
    return lambda _name, codes, scale: dequantize(codes, scale, args=args, dtype=torch.float32)


def write_dequantized(shipped: Path, dest: Path, scale_suffix: str, dequantize: Dequantize) -> tuple[Path, set[str]]:
    """A copy of ``shipped`` whose e4m3 weights are replaced by their float32 values (scales dropped, no
    quantization_config): what transformers' float32 model runs as the oracle. Returns it and the names of
    the weights shipped in FP8."""
    shutil.copytree(shipped, dest)
    names: set[str] = set()
    for file in sorted(dest.glob("*.safetensors")):
        tensors = load_file(str(file))
        for name in [n for n, t in tensors.items() if t.dtype == torch.float8_e4m3fn]:
            tensors[name] = dequantize(name, tensors[name], tensors.pop(name + scale_suffix)).float().contiguous()
            names.add(name)
        save_file(tensors, str(file), metadata={"format": "pt"})
    _set_quantization_config(dest, None)
    return dest, names


def _set_quantization_config(folder: Path, quantization: dict | None) -> None:
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text())
    config.pop("quantization_config", None)
    if quantization is not None:
        config["quantization_config"] = quantization
    config_file.write_text(json.dumps(config, indent=2))
