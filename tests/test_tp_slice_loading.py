"""Each tensor-parallel rank reads only its slices of the checkpoint: lazy views against torch's own views,
the bytes each rank reads (worked out from the tensor names and the sharding rules), and the memory a
rank's loading takes, measured in a fresh process (TP=1 vs TP=2)."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from support.tp_families import TP_CHECKPOINTS
from support.tp_launch import TESTS, worker_env


def test_lazy_views_hold_what_torch_views_hold(tmp_path):
    from mii_core.loading.slices import LazySlice, ReadCounter

    full = torch.randn(6, 8, 10)
    save_file({"t": full}, str(tmp_path / "t.safetensors"))
    handle = safe_open(str(tmp_path / "t.safetensors"), framework="pt")
    views = {  # each lazy view chain beside the same chain on the tensor itself
        "narrow": (lambda t: t.narrow(1, 2, 4).narrow(2, 5, 5)),
        "select": (lambda t: t.select(0, 3).narrow(1, 1, 3)),
        "index": (lambda t: t[-1][2]),
        "split": (lambda t: t.split([1, 5], dim=0)[1].split(3, dim=2)[3]),
        "chunk": (lambda t: t.select(2, 7).chunk(2, dim=1)[1]),
        "t": (lambda t: t.select(0, 2).t().narrow(0, 4, 6).narrow(1, 1, 2)),
    }
    for label, chain in views.items():
        counter = ReadCounter()
        lazy = chain(LazySlice.of_safetensors(handle.get_slice("t"), counter))
        expected = chain(full)
        assert lazy.shape == expected.shape, label
        assert counter.bytes_read == 0, f"{label}: a view read before use"
        dst = torch.empty(expected.shape)
        dst.copy_(lazy)  # a torch call on the view reads it
        assert torch.equal(dst, expected), label
        assert counter.bytes_read == expected.numel() * 4, f"{label}: read more than the view"


# Tensors every rank reads whole: norms, MoE routers, row-parallel biases, learned positions; and a
# transformed tensor (Falcon's grouped q/k/v is reordered across the whole tensor before it is split).
WHOLE_ON_EVERY_RANK = {
    "llama": [r"norm"],
    "mixtral": [r"norm", r"block_sparse_moe\.gate\."],
    "gpt2-kit": [r"\.ln_", r"ln_f", r"c_proj\.bias", r"wpe"],
    "falcon-40b": [r"layernorm|ln_|ln_f", r"dense_4h_to_h\.bias|dense\.bias", r"query_key_value"],
}


def _expected_share(path, whole_patterns: list[str], tied: bool) -> float:
    """The share of the used checkpoint bytes one of two ranks reads: half of each split tensor."""
    handle = safe_open(str(path / "model.safetensors"), framework="pt")
    read = total = 0
    for name in handle.keys():
        if tied and name == "lm_head.weight":
            continue
        size = handle.get_slice(name).get_shape()
        nbytes = torch.Size(size).numel() * 4
        total += nbytes
        read += nbytes if any(re.search(p, name) for p in whole_patterns) else nbytes / 2
    return read / total


@pytest.mark.parametrize("family", sorted(WHOLE_ON_EVERY_RANK))
def test_each_rank_reads_its_share_of_the_checkpoint(family, tmp_path_factory):
    from mii_core.engine.builder import load_policy
    from mii_core.loading.weights import load_weights
    from mii_core.model.ops import KernelSet
    from mii_core.distributed.parallel_context import ParallelContext
    from mii_core.plugins import get_plugins

    path = TP_CHECKPOINTS[family](lambda name: tmp_path_factory.mktemp(name))
    policy = load_policy(path)
    kernels = KernelSet("cpu", get_plugins().kernels)
    expected = _expected_share(path, WHOLE_ON_EVERY_RANK[family], policy.spec.tie_word_embeddings)
    for rank, world_size in ((0, 1), (0, 2), (1, 2)):
        model = policy.build_model(ParallelContext(rank, world_size), kernels, torch.device("cpu"), torch.float32)
        counter = load_weights(model, policy, path, show_progress=False)
        want = 1.0 if world_size == 1 else expected
        assert counter.share_read == pytest.approx(want, abs=0.002), \
            f"{family} rank {rank} of {world_size} read {counter.share_read:.3f} of the checkpoint, expected {want:.3f}"


def _wide_llama(folder):
    """A Llama whose weights dwarf the process's other memory: 2 layers of width 1024 (129 MB float32)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from support.tiny_models import build_tiny_checkpoint

    config = LlamaConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=2, num_attention_heads=8,
                         num_key_value_heads=4, max_position_embeddings=256)
    return build_tiny_checkpoint(folder, LlamaForCausalLM, config)


def test_rank_memory_while_loading_is_about_half(tmp_path):
    path = _wide_llama(tmp_path / "wide")
    script = TESTS / "support" / "load_memory.py"
    runs = {(rank, world): subprocess.Popen([sys.executable, str(script), str(path), str(rank), str(world)],
                                            env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for rank, world in ((0, 1), (0, 2), (1, 2))}
    results = {}
    for key, process in runs.items():
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err[-3000:]
        results[key] = json.loads(out.strip().splitlines()[-1])
    whole = results[(0, 1)]
    print("\nloading a 129 MB float32 checkpoint, per rank (MB): " + "; ".join(
        f"TP={w} rank {r}: parameters {m['param_bytes'] / 1e6:.1f}, read {m['bytes_read'] / 1e6:.1f}, "
        f"peak private memory growth {m['peak_anon_growth'] / 1e6:.1f}, "
        f"peak RSS growth {m['peak_rss_growth'] / 1e6:.1f}"
        for (r, w), m in results.items()))
    for rank in (0, 1):
        half = results[(rank, 2)]
        assert 0.5 <= half["param_bytes"] / whole["param_bytes"] < 0.505
        assert 0.5 <= half["bytes_read"] / whole["bytes_read"] < 0.505
        # private memory: the parameters and nothing else (no whole tensor is ever copied)
        assert half["peak_anon_growth"] < 0.55 * whole["peak_anon_growth"]
        assert half["peak_anon_growth"] < 1.05 * half["param_bytes"]
