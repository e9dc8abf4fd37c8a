"""Load-time quantization streams: while a checkpoint loads, full-precision weights wait only for the rest
of their own layer; afterwards every linear and expert is quantized, and the LM head where it is not tied to
the embedding, and nothing else is."""
import re
from collections import defaultdict

import pytest

import mii_core
from mii_core.model.parameters import WeightSlot
from support import tp_families


@pytest.fixture(scope="module", params=["llama", "mixtral", "opt-350m"])
def checkpoint(request, tmp_path_factory):
    return tp_families.TP_CHECKPOINTS[request.param](tmp_path_factory.mktemp)


def _layer_of(name: str) -> str:
    match = re.search(r"layers\.(\d+)\.", name)
    return match.group(1) if match else name  # outside the layers: a group of its own


@pytest.mark.parametrize("mode", ["wf8af16", "wf6af16"])
def test_loading_holds_at_most_one_layer_in_full_precision(checkpoint, mode, monkeypatch):
    slots: list[WeightSlot] = []
    peak = [0]
    original_init, original_copy = WeightSlot.__init__, WeightSlot.copy

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        slots.append(self)

    def copy(self, dst, src, name):
        original_copy(self, dst, src, name)
        peak[0] = max(peak[0], sum(s.param.numel() for s in slots if s.staged))

    monkeypatch.setattr(WeightSlot, "__init__", init)
    monkeypatch.setattr(WeightSlot, "copy", copy)
    pipe = mii_core.pipeline(str(checkpoint), quantization_mode=mode)
    try:
        params = dict(pipe.engine.model.named_parameters())
        head_of_its_own = pipe.engine.model.lm_head is not pipe.engine.model.embed
    finally:
        pipe.destroy()
    per_layer = defaultdict(int)
    for name, param in params.items():
        if param.is_meta:
            per_layer[_layer_of(name)] += param.numel()
    assert 0 < peak[0] <= max(per_layer.values()), (peak[0], dict(per_layer))
    assert all(s.quantized is not None and not s.staged for s in slots)
    quantized = {name for name, param in params.items() if param.is_meta}
    # every linear and expert stack quantized, and a head of its own; embeddings, norms, biases, routers are not
    assert all(name.endswith(("weight", "gate_up", "down")) for name in quantized)
    assert not any(re.search(r"embed|norm|router|bias|shared_expert_gate", n) for n in quantized), quantized
    assert ("lm_head.weight" in quantized) == head_of_its_own
    assert any(name.endswith("o_proj.weight") for name in quantized)
