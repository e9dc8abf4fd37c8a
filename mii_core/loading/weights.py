"""Streams checkpoint tensors into the engine model through each parameter's ``weight_loader``."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from mii_core.loading.checkpoint import count_tensors, iter_tensors, weight_files
from mii_core.model.policy import ArchitecturePolicy

log = logging.getLogger(__name__)


def load_weights(model: nn.Module, policy: ArchitecturePolicy, model_path: Path, show_progress: bool = True) -> None:
    params = dict(model.named_parameters(remove_duplicate=False))
    files = weight_files(model_path)
    total = count_tensors(files)
    loaded: set[str] = set()
    bar = tqdm(total=total if total > 0 else None, desc="Loading weights", unit="tensor",
               disable=None if show_progress else True, leave=False)  # None: off when not a TTY
    for name, tensor in iter_tensors(files):
        bar.update(1)
        target = policy.map_weight(name)
        if target is None:
            if not policy.is_ignored(name):
                log.debug("checkpoint tensor '%s' is not used by the engine", name)
            continue
        param = params.get(target.param_name)
        if param is None:
            raise ValueError(f"checkpoint tensor '{name}' maps to '{target.param_name}', which this model "
                             "does not have (does the config match the weights?)")
        with torch.no_grad():
            param.weight_loader(param, target.prepare(tensor, policy.spec), target.shard_id, name=name)  # copy_ casts and moves
        loaded.add(target.checkpoint_name or name)  # as expected_weights() names it: prefix included
    bar.close()
    missing = [n for n in policy.expected_weights() if n not in loaded and _required(n, params, policy)]
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise ValueError(f"checkpoint '{model_path}' is missing weights: {shown}")


def _required(name: str, params: dict[str, nn.Parameter], policy: ArchitecturePolicy) -> bool:
    target = policy.map_weight(name)
    return target is not None and params.get(target.param_name) is not None
