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


@pytest.mark.parametrize("mode", ["fp8", "wf6af16"])
def test_a_ranks_head_quantizes_its_rows_and_zero_padding(mode):
    """A vocabulary of 7 over 2 ranks pads to 8: rank 1 holds rows 4-6 and one padding row. Its head is
    quantized once every row has arrived (the padding as zeros): the codes decode to rows 4-6 as the mode
    rounds them alone (tests/support/quant_reference.py, from the formats' definitions), and to zeros."""
    import torch

    from mii_core.distributed.parallel_context import ParallelContext
    from mii_core.model.parallel import VocabParallelHead
    from mii_core.model.quantization import building_quantized
    from support.quant_reference import dequantized

    with building_quantized(mode):
        head = VocabParallelHead(7, 64, ParallelContext(rank=1, world_size=2), torch.device("cpu"), torch.float32)
    full = torch.randn(7, 64, generator=torch.Generator().manual_seed(0))
    assert head.weight_slot.quantized is None
    head.weight.weight_loader(head.weight, full, None, "lm_head.weight")
    got = head.weight_slot.quantized.dequantize(torch.float32)
    # fp8: one scale for the rank's whole shard, padding included (its zeros change no absmax); else one a row
    amax = full[4:].abs().max().item() if mode == "fp8" else None
    want = dequantized(full[4:], mode, -2, tensor_amax=amax)
    torch.testing.assert_close(got[:3], want, rtol=0, atol=0)
    assert not got[3].any()
    with pytest.raises(ValueError, match=r"lm_head.weight.*\(7, 64\)"):
        head.weight.weight_loader(head.weight, full[:6], None, "lm_head.weight")
