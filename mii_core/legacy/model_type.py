"""Which model type a checkpoint folder holds, for choosing its task model: config.json's ``model_type``
(a transformers checkpoint), else model_index.json's ``_class_name`` (a diffusers pipeline folder, which
has no config.json at its top: its model type is the pipeline class it was saved from, such as
``StableDiffusionPipeline``; task plugins register those names)."""
from __future__ import annotations

from pathlib import Path

from mii_core.loading.checkpoint import read_hf_config, read_json_object

DIFFUSERS_INDEX = "model_index.json"


def model_type_of(folder: Path) -> str:
    if (folder / "config.json").is_file():
        return str(read_hf_config(folder).get("model_type", ""))
    index = folder / DIFFUSERS_INDEX
    if index.is_file():
        class_name = read_json_object(index).get("_class_name")
        if not isinstance(class_name, str) or not class_name:
            raise ValueError(f"'{index}' has no '_class_name' (the diffusers pipeline class); restore it from "
                             "the model's original files")
        return class_name
    raise ValueError(f"'{folder}' has neither config.json (a transformers checkpoint) nor {DIFFUSERS_INDEX} "
                     "(a diffusers pipeline folder)")
