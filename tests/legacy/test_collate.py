"""The encoder tasks' padded batch is the one HF's ``tokenizer.pad`` makes (the oracle), key by key, for
every encoder type: collate fills its arrays itself, for speed."""
from __future__ import annotations

import pytest
import torch

from mii_core.plugins import get_plugins
from support.tiny_encoders import ENCODERS


@pytest.mark.parametrize("model_type", ENCODERS)
def test_collate_equals_tokenizer_pad(encoder, model_type):
    folder = encoder(model_type, "text-classification")
    model = get_plugins().tasks.load_for("text-classification", model_type).load(
        folder, task="text-classification", device="cpu", dtype=torch.float32)
    prepared = [model.prepare({"query": text}, {}) for text in ["hi there", "the quick brown fox jumps", "a"]]
    ours = model.collate(prepared, 16)
    rows = [{k: v for k, v in p.data.items() if k in model.tokenizer.model_input_names} for p in prepared]
    theirs = model.tokenizer.pad(rows, padding="max_length", max_length=16, return_tensors="pt")
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        assert ours[key].dtype == theirs[key].dtype and torch.equal(ours[key], theirs[key]), key
