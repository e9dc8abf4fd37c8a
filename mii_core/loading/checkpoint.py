"""Resolves a model name or path to a local folder and iterates its tensors one at a time, unread
(:mod:`mii_core.loading.slices`)."""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import torch
from safetensors import safe_open

from mii_core.loading.slices import LazySlice, ReadCounter

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


class MissingConfigField(KeyError, ValueError):
    """A required field missing from config.json: a ValueError for the user, still a KeyError for code
    that reads the config like a dict."""

    def __str__(self) -> str:
        return str(self.args[0])


class HFConfig(dict):
    """config.json as a dict whose missing required fields are errors naming the file and the field."""

    def __init__(self, values: dict, source: Path) -> None:
        super().__init__(values)
        self.source = source

    def __missing__(self, key: str):
        raise MissingConfigField(f"'{self.source}' has no '{key}', which the "
                                 f"'{self.get('model_type')}' architecture needs; the checkpoint's config.json "
                                 "is incomplete: restore it from the model's original files")


def read_json(file: Path) -> object:
    """A JSON file of the checkpoint; any failure is a ValueError naming the file."""
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise ValueError(f"'{file}' is not valid JSON ({exc}); fix it or restore it from the model's "
                         "original files") from None
    except OSError as exc:
        raise ValueError(f"cannot read '{file}': {exc.strerror or exc}") from None


def read_json_object(file: Path) -> dict:
    value = read_json(file)
    if not isinstance(value, dict):
        raise ValueError(f"'{file}' must hold a JSON object ({{...}}), found a {type(value).__name__}; "
                         "fix it or restore it from the model's original files")
    return value


def read_hf_config(model_path: Path) -> HFConfig:
    config_file = model_path / "config.json"
    if not config_file.is_file():
        raise ValueError(f"'{model_path}' has no config.json; is it a Hugging Face checkpoint folder?")
    return HFConfig(read_json_object(config_file), config_file)


def weight_files(model_path: Path) -> list[Path]:
    """Shard files from an index json when present, else every safetensors (or .bin) file."""
    for index_name, single in (("model.safetensors.index.json", "*.safetensors"),
                               ("pytorch_model.bin.index.json", "pytorch_model*.bin")):
        index = model_path / index_name
        if index.is_file():
            return _shards_of(index)
        found = sorted(model_path.glob(single))
        if found:
            return found
    raise ValueError(f"no weights in '{model_path}': expected *.safetensors or pytorch_model*.bin files")


def _shards_of(index: Path) -> list[Path]:
    weight_map = read_json_object(index).get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(s, str) for s in weight_map.values()):
        raise ValueError(f"'{index}' has no valid 'weight_map' (tensor name -> shard file); "
                         "restore it from the model's original files")
    shards = [index.parent / s for s in sorted(set(weight_map.values()))]
    missing = [s.name for s in shards if not s.is_file()]
    if missing:
        raise ValueError(f"'{index}' names shard files that are not in the folder: {', '.join(missing)}; "
                         "download the missing shards")
    return shards


@contextmanager
def reading(file: Path) -> Iterator[None]:
    """Turns any failure of the weight readers (safetensors, torch.load) into an error naming the file."""
    try:
        yield
    except Exception as exc:  # SafetensorError, RuntimeError, UnpicklingError, EOFError, OSError, ...
        raise ValueError(f"cannot read weights file '{file}' ({type(exc).__name__}: {exc}); the file is "
                         "damaged or incomplete: download it again") from exc


def count_tensors(files: list[Path]) -> int:
    total = 0
    for file in files:
        if file.suffix == ".safetensors":
            with reading(file), safe_open(str(file), framework="pt") as handle:
                total += len(list(handle.keys()))
    return total or -1


def iter_slices(files: list[Path], counter: Optional[ReadCounter] = None) -> Iterator[tuple[str, LazySlice]]:
    """Yields (name, lazy view) one tensor at a time; nothing is read until a loader copies its part
    (safetensors through ``get_slice``, ``.bin`` through a memory map), so a rank reads its shard."""
    for file in files:
        if file.suffix == ".safetensors":
            yield from _safetensors_slices(file, counter)
        else:
            with reading(file):
                state = torch.load(file, map_location="cpu", mmap=True, weights_only=True)
            if not isinstance(state, dict):
                raise ValueError(f"weights file '{file}' holds a {type(state).__name__}, not a dict of "
                                 "tensors (a state_dict); save the weights with model.state_dict()")
            for name, tensor in state.items():
                yield name, LazySlice.of_tensor(tensor, counter)
            del state


def _safetensors_slices(file: Path, counter: Optional[ReadCounter]) -> Iterator[tuple[str, LazySlice]]:
    with reading(file):
        handle = safe_open(str(file), framework="pt")
        names = list(handle.keys())
    for name in names:
        with reading(file):
            view = LazySlice.of_safetensors(handle.get_slice(name), counter)
        yield name, view


def generation_eos_ids(model_path: Path) -> list[int]:
    """EOS ids from generation_config.json, which HF's generate prefers over config.json."""
    file = model_path / "generation_config.json"
    if not file.is_file():
        return []
    eos = read_json_object(file).get("eos_token_id")
    eos = [] if eos is None else eos if isinstance(eos, list) else [eos]
    if not all(isinstance(e, int) and not isinstance(e, bool) for e in eos):
        raise ValueError(f"'{file}': eos_token_id must be an integer or a list of integers, "
                         f"got {eos!r}")
    return eos
