"""Streams checkpoint tensors into the engine model through each parameter's ``weight_loader``.

Each tensor arrives as a :class:`~mii_core.loading.slices.LazySlice`: the loader narrows it to its
rank's part and only that part is read, so a tensor-parallel rank reads about 1/N of the checkpoint.
Exceptions, where a rank reads a whole tensor and keeps its slice: a rule's ``transform`` (it reorders
rows across the tensor, e.g. Falcon's grouped q/k/v) and the replicated parameters (norms, biases of
row-parallel layers, routers, learned positions, project in/out).

A checkpoint shipped in FP8 (``shipped``, mii_core/loading/prequantized.py): each e4m3 weight loads with
its scale tensor, read when the weight arrives (scale tensors are skipped in the stream)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import torch
from torch import nn
from tqdm.auto import tqdm

from mii_core.loading.checkpoint import count_tensors, iter_slices, weight_files
from mii_core.loading.prequantized import ShippedFP8, ShippedScales
from mii_core.loading.slices import ReadCounter
from mii_core.model.policy import ArchitecturePolicy

log = logging.getLogger(__name__)


def load_weights(model: nn.Module, policy: ArchitecturePolicy, model_path: Path,
                 show_progress: bool = True, shipped: Optional[ShippedFP8] = None) -> ReadCounter:
    """Loads every parameter; returns how many bytes of the used checkpoint tensors this rank read."""
    counter = ReadCounter()
    params = dict(model.named_parameters(remove_duplicate=False))
    files = weight_files(model_path)
    scales = ShippedScales(files, shipped) if shipped is not None else None
    total = count_tensors(files)
    loaded: set[str] = set()
    unused: list[str] = []  # tensors no rule maps and no pattern ignores: a misspelt rule shows up here
    bar = tqdm(total=total if total > 0 else None, desc="Loading weights", unit="tensor",
               disable=None if show_progress else True, leave=False)  # None: off when not a TTY
    for name, tensor in iter_slices(files, counter):
        bar.update(1)
        if scales is not None and scales.is_scale(name):
            continue  # read with its weight
        target = policy.map_weight(name)
        if target is None:
            if not policy.is_ignored(name):
                log.debug("checkpoint tensor '%s' is not used by the engine", name)
                unused.append(name)
            continue
        param = params.get(target.param_name)
        if param is None:
            raise ValueError(f"checkpoint tensor '{name}' maps to '{target.param_name}', which this model "
                             "does not have (does the config match the weights?)")
        counter.checkpoint_bytes += tensor.numel() * tensor.element_size()
        with torch.no_grad():
            if tensor.dtype == torch.float8_e4m3fn:
                _load_shipped(param, target, tensor, scales, policy, name)
            else:
                param.weight_loader(param, target.prepare(tensor, policy.spec), target.shard_id, name=name)  # copy_ casts and moves
        loaded.add(target.checkpoint_name or name)  # as expected_weights() names it: prefix included
    bar.close()
    missing = _missing(policy, loaded, params)
    if missing:
        raise ValueError(f"checkpoint '{model_path}' is missing weights: {_listing(missing)}"
                         + (f"; its tensors that no weight rule maps: {_listing(unused)} (a misspelt rule "
                            "pattern, or a checkpoint of another layout?)" if unused else ""))
    log.debug("read %d of %d bytes of checkpoint tensors (%.0f%%)", counter.bytes_read, counter.checkpoint_bytes,
              100 * counter.share_read)
    return counter


def _load_shipped(param: nn.Parameter, target, codes, scales: Optional[ShippedScales], policy: ArchitecturePolicy,
                  name: str) -> None:
    """An e4m3 checkpoint tensor with its scales: into its layer's shipped slot (scales first, then codes,
    each through the parameter's own loader), or dequantized into a parameter kept in the model's dtype."""
    if scales is None:
        raise ValueError(f"checkpoint tensor '{name}' is stored in FP8 (e4m3) but config.json has no "
                         "quantization_config saying how it is scaled; restore the checkpoint's config.json")
    rows = scales.rows_for(name, codes.shape)
    slot = getattr(param, "weight_slot", None)
    if slot is None:  # a router, an embedding, the head: kept in the model's dtype
        values = scales.scheme.dequantize(codes.read() if hasattr(codes, "read") else codes, rows)
        param.weight_loader(param, target.prepare(values, policy.spec), target.shard_id, name=name)
        return
    if target.rule.transpose:
        raise ValueError(f"checkpoint tensor '{name}' is stored transposed ([in, out]) in FP8; shipped FP8 "
                         "weights are read only as [out, in]")
    with slot.receiving_scales():
        param.weight_loader(param, target.prepare(rows, policy.spec), target.shard_id, name=name)
    param.weight_loader(param, target.prepare(codes, policy.spec), target.shard_id, name=name)


def _listing(names: list[str], shown: int = 8) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _missing(policy: ArchitecturePolicy, loaded: set[str], params: dict[str, nn.Parameter]) -> list[str]:
    """Expected names that were not loaded. A family may store a parameter either whole or in parts
    (Mixtral's experts fused or one per tensor), or under two names: a whole name counts as present
    when its parameter came whole or in parts from other tensors, a part when its parameter came whole."""
    targets = {name: policy.map_weight(name) for name in policy.expected_weights()}
    targets = {name: t for name, t in targets.items() if t is not None and params.get(t.param_name) is not None}
    whole = {t.param_name for name, t in targets.items() if name in loaded and t.shard_id is None}
    in_parts = {t.param_name for name, t in targets.items() if name in loaded and t.shard_id is not None}
    return [name for name, t in targets.items() if name not in loaded and t.param_name not in whole
            and not (t.shard_id is None and t.param_name in in_parts)]
