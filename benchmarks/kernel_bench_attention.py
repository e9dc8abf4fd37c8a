"""Paged attention on CUDA: the Triton kernel (every launch config) against the PyTorch reference op.

    python3 benchmarks/kernel_bench_attention.py [--workloads w2,w2g,long,w1,mixed,w3] [--configs all]
        [--extra-config 'splits8={"decode_splits": 8}'] [--block-size 64] [--out $OUT/attention.json]

``--kv-dtype fp8`` runs every row on an FP8 (e4m3) cache, as ``kv_cache_dtype="fp8"`` makes it: the H200 profile
of 2026-12-03 found W1's decode attention as slow on it as on bf16 (7.5 ms a step for half the bytes). Its
values are stored along each block's slots, as the engine stores them by default, or with ``--v-layout
features`` along the features (launch config ``fp8_values_along_features``: 242 against 200 µs for W1's decode
step per layer on the H200, 2026-12-03).
Attention shape (``--shape``): llama (Llama-3-8B: 32 query heads, 8 KV heads, head size 128), gemma2
(Gemma-2-9B: 16 / 8 / 256, logits soft-capped at 50, scale 256^-0.5: its W1 row is 2.04x its floor, most
of which is KV reads) or qwen3_moe (Qwen3-30B-A3B: 32 / 4 / 128); bf16. Workloads:
  w2     batch-1 decode at contexts 129 and 256 (W2's range), block tables just wide enough
  w2g    the same with tables padded to 8,192 tokens, as a CUDA-graph runner passes them (fixes the split count)
  long   batch-1 decode at 1k, 4k and 8k contexts (split-K territory)
  w1     a W1 decode step: 256 sequences, contexts uniform in 100-2000
  mixed  a SplitFuse step: 200 decodes (contexts 100-2000) and a 512-token prompt chunk after 500 cached
  w3     W3's prefill: 64 prompts of 1,024 tokens
Each call runs on its own layer's cache, round robin over enough layers that the K/V cannot sit in L2
(as in a model, where every layer has its own cache). "graph" times replay a CUDA graph of one call per
layer (GPU time, no launch overhead: what a captured decode step pays); "eager" times plain calls. Decode
rows print the K/V read bandwidth, prefill rows the attention TFLOP/s; ceilings measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import dataclass

import torch

from mii_core.batch import build_ragged_batch
from mii_core.model.ops import AttentionParams
from mii_kernels.torch_ref.attention import paged_attention as torch_reference
from mii_kernels.triton import attention as triton_attention

DTYPE = torch.bfloat16


@dataclass(frozen=True)
class Shape:
    heads: int
    kv_heads: int
    head_dim: int
    softcap: float | None = None
    scale: float | None = None  # None: head_dim ** -0.5

    def params(self, kv_scales: torch.Tensor | None = None) -> AttentionParams:
        return AttentionParams(self.scale or self.head_dim ** -0.5, logit_softcap=self.softcap, kv_scales=kv_scales)


SHAPES = {"llama": Shape(32, 8, 128), "gemma2": Shape(16, 8, 256, softcap=50.0, scale=256 ** -0.5),
          "qwen3_moe": Shape(32, 4, 128)}
L2_BYTES = 64 << 20  # more than the H100's 50 MB L2: the cache rotation must exceed this


@dataclass
class Workload:
    name: str
    seqs: list[tuple[int, int]]  # (cached before the step, new tokens)
    table_tokens: int | None = None  # pad block tables to this many tokens (graph-style metadata)


def workloads(names: list[str]) -> list[Workload]:
    rng = random.Random(0)
    decodes = lambda n: [(rng.randint(100, 2000) - 1, 1) for _ in range(n)]  # noqa: E731
    table = {
        "w2": [Workload("w2 b1 ctx129", [(128, 1)]), Workload("w2 b1 ctx256", [(255, 1)])],
        "w2g": [Workload("w2g b1 ctx256 tables 8k", [(255, 1)], table_tokens=8192)],
        "long": [Workload(f"long b1 ctx{c}", [(c - 1, 1)]) for c in (1024, 4096, 8192)],
        "w1": [Workload("w1 256 decodes ctx100-2000", decodes(256))],
        "mixed": [Workload("mixed 200 decodes + 512 chunk", decodes(200) + [(500, 512)])],
        "w3": [Workload("w3 prefill 64x1024", [(0, 1024)] * 64)],
    }
    unknown = set(names) - set(table)
    if unknown:
        raise SystemExit(f"unknown workloads {sorted(unknown)}; choose from {sorted(table)}")
    return [w for name in names for w in table[name]]


class Setup:
    """One workload's batch, queries and per-layer caches (tables shared by the layers, as in a model)."""

    def __init__(self, work: Workload, block_size: int, device: torch.device, shape: Shape, fp8_kv: bool = False,
                 v_slot_major: bool = False):
        self.shape, self.v_slot_major = shape, v_slot_major
        kv_size = 1 if fp8_kv else 2  # bytes a cached K or V element takes
        heads, kv_heads, head_dim = shape.heads, shape.kv_heads, shape.head_dim
        blocks = [-(-(seen + new) // block_size) for seen, new in work.seqs]
        num_blocks = sum(blocks) + 1
        order = torch.randperm(num_blocks - 1).add_(1).tolist()  # shuffled, as after some churn
        tables = [order[sum(blocks[:i]):sum(blocks[:i + 1])] for i in range(len(blocks))]
        if work.table_tokens:
            tables[0] += [0] * (-(-work.table_tokens // block_size) - len(tables[0]))
        self.batch = build_ragged_batch([[0] * new for _, new in work.seqs], [s for s, _ in work.seqs], tables,
                                        block_size, device)
        self.kv_bytes = sum(seen + new for seen, new in work.seqs) * kv_heads * head_dim * 2 * kv_size
        layer_bytes = num_blocks * block_size * kv_heads * head_dim * 2 * kv_size
        self.layers = max(2, min(256, -(-L2_BYTES * 4 // layer_bytes)))
        self.cache = torch.randn((self.layers, 2, num_blocks, block_size, kv_heads, head_dim), device=device,
                                 dtype=DTYPE)
        kv_scales = None
        if fp8_kv:  # e4m3 codes of N(0, 1) values and a scale of 1 per head: the engine's FP8 cache layout
            self.cache = self.cache.to(torch.float8_e4m3fn)
            kv_scales = torch.ones((2, kv_heads), device=device, dtype=torch.float32)
        tokens = sum(new for _, new in work.seqs)
        self.q = torch.randn((tokens, heads, head_dim), device=device, dtype=DTYPE)
        self.io_bytes = 2 * self.q.numel() * self.q.element_size()
        self.flops = 4 * heads * head_dim * sum(seen + i + 1 for seen, new in work.seqs for i in range(new))
        self.params = shape.params(kv_scales)

    def call(self, attend, layer: int):
        return attend(self.q, self.cache[layer, 0], self.values(layer), self.batch, self.params)

    def values(self, layer: int) -> torch.Tensor:
        """The layer's value plane; with ``v_slot_major`` stored along each block's slots, as the engine
        stores an FP8 cache's values for kernels that read them so (mii_core/kv_cache/cache.py)."""
        plane = self.cache[layer, 1]
        if not self.v_slot_major:
            return plane
        blocks, block_size, heads, features = plane.shape
        return plane.view(blocks, heads, features, block_size).permute(0, 3, 1, 2)


def time_eager(setup: Setup, attend, reps: int) -> float:
    for layer in range(setup.layers):
        setup.call(attend, layer)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        for layer in range(setup.layers):
            setup.call(attend, layer)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e3 / (reps * setup.layers)  # µs per call


def time_graph(setup: Setup, attend, reps: int) -> float | None:
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for layer in range(setup.layers):
                setup.call(attend, layer)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for layer in range(setup.layers):
                setup.call(attend, layer)
        graph.replay()
        torch.cuda.synchronize()
    except Exception as exc:  # the reference may not be capturable; report, do not stop the run
        print(f"    (graph capture failed: {type(exc).__name__}: {str(exc)[:120]})")
        return None
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e3 / (reps * setup.layers)


def ceilings(device: torch.device) -> dict:
    big = torch.ones(1 << 31, device=device, dtype=DTYPE)  # 4.3 GB
    big.sum()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        big.sum()
    end.record()
    torch.cuda.synchronize()
    read = 5 * big.numel() * 2 / (start.elapsed_time(end) * 1e-3) / 1e9
    del big
    a = torch.randn((8192, 8192), device=device, dtype=DTYPE)
    a @ a
    start.record()
    for _ in range(10):
        a @ a
    end.record()
    torch.cuda.synchronize()
    matmul = 10 * 2 * 8192 ** 3 / (start.elapsed_time(end) * 1e-3) / 1e12
    return {"read_GBps": round(read), "bf16_matmul_TFLOPs": round(matmul)}


def rate(setup: Setup, micros: float | None, prefill: bool) -> str:
    if micros is None:
        return "-"
    if prefill:
        return f"{setup.flops / (micros * 1e-6) / 1e12:7.1f} TFLOP/s"
    return f"{(setup.kv_bytes + setup.io_bytes) / (micros * 1e-6) / 1e9:7.0f} GB/s"


def bench_workload(work: Workload, configs: dict[str, dict], args, device) -> dict:
    setup = Setup(work, args.block_size, device, SHAPES[args.shape], fp8_kv=args.kv_dtype == "fp8",
                  v_slot_major=args.kv_dtype == "fp8" and args.v_layout == "slots")
    prefill = setup.batch.max_query_len > 1 and not setup.batch.decode_seqs.numel()
    print(f"\n{work.name}: {setup.batch.num_seqs} seqs, {setup.q.shape[0]} new tokens, "
          f"K/V {setup.kv_bytes / 1e6:.1f} MB per layer call, {setup.layers} layers rotated")
    want = setup.call(torch_reference, 0).float()
    rows = {}
    impls = {"torch_ref": (torch_reference, None)}
    impls.update({f"triton[{name}]": (triton_attention.TritonAttention(cfg), cfg) for name, cfg in configs.items()})
    for label, (attend, cfg) in impls.items():
        try:
            err = (setup.call(attend, 0).float() - want).abs().max().item()
            graph, eager = time_graph(setup, attend, args.reps), time_eager(setup, attend, args.reps)
            splits = None
            if cfg is not None and setup.batch.decode_seqs.numel():
                splits = attend.decode_splits(setup.batch.decode_seqs.numel(), setup.shape.kv_heads,
                                              setup.batch.block_tables.shape[1] * args.block_size, None, device)
        except Exception as exc:  # one failing config must not hide the others
            print(f"  {label:24s} FAILED: {type(exc).__name__}: {str(exc)[:200]}")
            rows[label] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        ref = rows.get("torch_ref", {})
        pair = (ref.get("graph_us"), graph) if ref.get("graph_us") and graph else (ref.get("eager_us"), eager)
        speedup = f"{pair[0] / pair[1]:5.2f}x ref" if pair[0] and label != "torch_ref" else ""
        graph_text = f"{graph:9.1f}" if graph is not None else "        -"
        print(f"  {label:24s} graph {graph_text} us  {rate(setup, graph, prefill)} | eager {eager:9.1f} us  "
              f"{rate(setup, eager, prefill)} | max err {err:.1e} {speedup}"
              + (f" | splits {splits}" if splits else ""))
        rows[label] = {"graph_us": graph, "eager_us": eager, "max_abs_err": err, "decode_splits": splits}
    del setup
    torch.cuda.empty_cache()
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", default="w2,w2g,long,w1,mixed,w3")
    p.add_argument("--configs", default="all", help="comma list of triton_attention.CONFIGS names, or all")
    p.add_argument("--extra-config", action="append", default=[],
                   help='NAME=JSON overrides on the default config, e.g. splits8={"decode_splits": 8}')
    p.add_argument("--shape", choices=sorted(SHAPES), default="llama", help="the model whose attention to run")
    p.add_argument("--kv-dtype", choices=("bf16", "fp8"), default="bf16",
                   help="the cache's dtype: fp8 is the engine's kv_cache_dtype='fp8' (e4m3, a scale per KV head)")
    p.add_argument("--v-layout", choices=("slots", "features"), default="slots",
                   help="an FP8 cache's values stored along each block's slots (the engine's default) or along "
                        "the features, as a bf16 cache's (launch config fp8_values_along_features)")
    p.add_argument("--block-size", type=int, default=64, help="KV block size (the engine's default above D=64)")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--skip-ceilings", action="store_true")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("kernel_bench_attention needs a CUDA GPU")
        return 2
    device = torch.device("cuda")
    names = list(triton_attention.CONFIGS) if args.configs == "all" else args.configs.split(",")
    configs = {name: dict(triton_attention.CONFIGS[name]) for name in names}
    for spec in args.extra_config:
        name, _, overrides = spec.partition("=")
        configs[name] = {**triton_attention.CONFIGS["default"], **json.loads(overrides)}
    torch.manual_seed(0)
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "configs": configs,
              "shape": args.shape, "kv_dtype": args.kv_dtype, "block_size": args.block_size, "workloads": {}}
    print(f"{result['device']}, torch {torch.__version__}, {args.shape} attention, {args.kv_dtype} KV cache, "
          f"block size {args.block_size}")
    if not args.skip_ceilings:
        result["ceilings"] = ceilings(device)
        print("ceilings:", result["ceilings"])
    for work in workloads([w.strip() for w in args.workloads.split(",") if w.strip()]):
        result["workloads"][work.name] = bench_workload(work, configs, args, device)
        if args.out:
            with open(args.out, "w") as f:
                json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
