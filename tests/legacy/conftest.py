"""Tiny encoder checkpoints per (model type, task), built once per session."""
from __future__ import annotations

import pytest
import transformers

from support.tiny_encoders import build_tiny_encoder


@pytest.fixture(scope="session")
def encoder(tmp_path_factory):
    """encoder(model_type, task) -> the folder of a tiny random checkpoint with that task's head."""
    built = {}

    def build(model_type: str, task: str):
        key = (model_type, task)
        if key not in built:
            folder = tmp_path_factory.mktemp(f"{model_type}-{task}")
            built[key] = build_tiny_encoder(folder, model_type, task)
        return built[key]

    return build


@pytest.fixture(scope="session")
def hf_pipeline():
    """hf_pipeline(task, folder) -> HF's pipeline on the same checkpoint, on CPU (built once each)."""
    built = {}

    def make(task: str, folder):
        if (task, folder) not in built:
            built[(task, folder)] = transformers.pipeline(task, model=str(folder), tokenizer=str(folder), device="cpu")
        return built[(task, folder)]

    return make
