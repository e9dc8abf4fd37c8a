"""Resolves a model name or path to a local folder and iterates its tensors one at a time."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import torch

WEIGHT_PATTERNS = ["*.json", "*.safetensors", "*.bin", "*.model", "*.txt", "*.tiktoken"]


def resolve_model_path(name_or_path: str) -> Path:
    """A local folder as is; otherwise a hub id, from the hub cache when offline."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists() or name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise ValueError(f"model path '{name_or_path}' does not exist or is not a folder; "
                         "give a checkpoint folder or a hub id like 'org/model'")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name_or_path, allow_patterns=WEIGHT_PATTERNS))
    except Exception as exc:  # hub errors come in many types; the user needs one clear message
        raise ValueError(f"model '{name_or_path}' is neither a local folder nor a reachable hub id "
                         f"(and not in the hub cache): {type(exc).__name__}: {exc}") from None


def read_hf_config(model_path: Path) -> dict:
    config_file = model_path / "config.json"
    if not config_file.is_file():
        raise ValueError(f"'{model_path}' has no config.json; is it a Hugging Face checkpoint folder?")
    return json.loads(config_file.read_text())


def weight_files(model_path: Path) -> list[Path]:
    """Shard files from an index json when present, else every safetensors (or .bin) file."""
    for index_name, single in (("model.safetensors.index.json", "*.safetensors"),
                               ("pytorch_model.bin.index.json", "pytorch_model*.bin")):
        index = model_path / index_name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            return [model_path / s for s in shards]
        found = sorted(model_path.glob(single))
        if found:
            return found
    raise ValueError(f"no weights in '{model_path}': expected *.safetensors or pytorch_model*.bin files")


def count_tensors(files: list[Path]) -> int:
    total = 0
    for file in files:
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(file), framework="pt") as handle:
                total += len(list(handle.keys()))
    return total or -1


def iter_tensors(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    """Yields (name, tensor) one at a time, so peak memory stays near one copy of the weights."""
    for file in files:
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(file), framework="pt") as handle:
                for name in handle.keys():
                    yield name, handle.get_tensor(name)
        else:
            state = torch.load(file, map_location="cpu", mmap=True, weights_only=True)
            yield from state.items()
            del state


def generation_eos_ids(model_path: Path) -> list[int]:
    """EOS ids from generation_config.json, which HF's generate prefers over config.json."""
    file = model_path / "generation_config.json"
    if not file.is_file():
        return []
    eos = json.loads(file.read_text()).get("eos_token_id")
    if eos is None:
        return []
    return list(eos) if isinstance(eos, list) else [int(eos)]
