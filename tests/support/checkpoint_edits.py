"""Edits to a tiny checkpoint folder after transformers wrote it: louder vectors, renamed tensors, a
changed config.json.

transformers initialises every LayerNorm to weight 1 / bias 0 and every Linear bias to 0, so a bias or
norm loaded into the wrong place (or not at all) would go unnoticed; ``randomize_vectors`` gives each of
them its own random values, which HF then loads like any other weight.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file

WEIGHTS_FILE = "model.safetensors"  # tiny checkpoints are written unsharded
REMOVE = object()  # edit_config(..., field=REMOVE) deletes the field


def _rewrite_weights(folder: Path, edit: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]) -> None:
    file = folder / WEIGHTS_FILE
    save_file(edit(load_file(file)), file, metadata={"format": "pt"})


def randomize_vectors(folder, *, seed: int, spread: float = 0.5, norms: bool = True) -> Path:
    """Norm weights become 1 + spread·N(0, 1) (unless ``norms`` is False: left as written), every 1-D bias
    spread·N(0, 1), in place."""
    generator = torch.Generator().manual_seed(seed)

    def edit(tensors):
        for name in sorted(tensors):
            tensor = tensors[name]
            is_norm = name.endswith(".weight")
            if tensor.dim() != 1 or (is_norm and not norms):
                continue
            noise = spread * torch.randn(tensor.shape, generator=generator, dtype=torch.float32)
            tensors[name] = (noise + 1 if is_norm else noise).to(tensor.dtype)
        return tensors

    _rewrite_weights(Path(folder), edit)
    return Path(folder)


def copy_checkpoint(src, dst) -> Path:
    shutil.copytree(src, dst)
    return Path(dst)


def rename_tensors(src, dst, rename: Callable[[str], str]) -> Path:
    """A copy of ``src`` whose tensors are named ``rename(name)`` (e.g. without the ``transformer.`` prefix)."""
    folder = copy_checkpoint(src, dst)
    _rewrite_weights(folder, lambda tensors: {rename(name): t for name, t in tensors.items()})
    return folder


def with_mask_buffers(src, dst, *buffer_names: str) -> Path:
    """A copy of ``src`` that also holds the attention-mask buffers older checkpoints saved (GPT-2's, GPT-J's
    ``attn.bias`` / ``attn.masked_bias``): a name ending in ``bias`` gets a causal mask, any other a scalar."""
    folder = copy_checkpoint(src, dst)
    masks = {name: torch.ones(1, 1, 8, 8, dtype=torch.bool).tril() if name.endswith(".bias") else torch.tensor(-1e4)
             for name in buffer_names}
    _rewrite_weights(folder, lambda tensors: tensors | masks)
    return folder


def edit_config(src, dst, **changes: Any) -> Path:
    """A copy of ``src`` with config.json fields set (or deleted with ``REMOVE``)."""
    folder = copy_checkpoint(src, dst)
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text())
    for field, value in changes.items():
        if value is REMOVE:
            config.pop(field, None)
        else:
            config[field] = value
    config_file.write_text(json.dumps(config, indent=2))
    return folder


def tensor_names(folder) -> list[str]:
    return sorted(load_file(Path(folder) / WEIGHTS_FILE))
