"""Issue 18's slow kernels, each launched once at its real shape inside a profiler range, for Nsight Compute.

    sh benchmarks/ncu_kernels.sh $OUT                  # on the GPU machine: ncu over this script, a CSV back
    .venv/bin/python benchmarks/ncu_kernels.py --shrink 16 --kernels all     # CPU smoke (TRITON_INTERPRET=1)

Timings say how long a kernel takes, not why: the FP8 GEMV reads at 3.1 TB/s where bf16's reads at 4.0, the FP8
decode attention at 2.4 where bf16's reads at 3.7, and two fixes that kept more bytes in flight did not help
(RESULTS.md, tenth session). Nsight Compute's warp stall reasons, memory throughput and issue activity do. Each
kernel here runs once to compile and warm up, then once between ``cudaProfilerStart`` and ``cudaProfilerStop``,
so ``ncu --profile-from-start off`` profiles exactly one launch of each (``ncu_kernels.sh`` passes it):

* ``gemv_fp8``, ``gemv_bf16``: the quantized GEMV (FP8 codes, the default tiles) and the bf16 GEMV at batch 1 on
  Llama-3-8B's gate|up weight (4096 → 28672);
* ``attention_fp8``, ``attention_bf16``: W1's decode attention step (256 sequences, contexts 100-2000), one layer;
* ``quantize``: mode "fp8"'s activation quantization at W3's step (8,192 tokens of 4,096): the absmax kernel and
  the codes' kernel;
* ``moe_fp8``: Mixtral's FP8 experts (8 of 14336 × 4096) at 8,192 tokens (W3's step) and 256 (W1's decode).
"""
from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

KERNELS = ("gemv_fp8", "gemv_bf16", "attention_fp8", "attention_bf16", "quantize", "moe_fp8")
HIDDEN, FFN, EXPERTS = 4096, 14336, 8


@contextmanager
def profiled(device: str):
    """The launches inside are the ones ncu profiles (with --profile-from-start off); nothing on a CPU."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.cudart().cudaProfilerStart()
    try:
        yield
    finally:
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.cudart().cudaProfilerStop()


def run_twice(name: str, launch, device: str) -> None:
    """Once to compile and warm up, once profiled."""
    launch()
    with profiled(device):
        launch()
    print(f"[ncu_kernels] {name}: launched", flush=True)


def gemv(quantized: bool, shrink: int, device: str, dtype: torch.dtype):
    from mii_core.model.quantization import quantize_weight
    from mii_kernels.triton import linear, quant_gemv

    weight = torch.randn(2 * FFN // shrink, HIDDEN // shrink, device=device, dtype=dtype) * (HIDDEN // shrink) ** -0.5
    x = torch.randn(1, HIDDEN // shrink, device=device, dtype=dtype)
    if not quantized:
        return lambda: linear.linear(x, weight)
    codes, tiles = quantize_weight(weight, "fp8"), quant_gemv.launch_config("default")
    return lambda: quant_gemv.quant_gemv(x, codes, None, tiles)


def attention(fp8: bool, shrink: int, device: str):
    import kernel_bench_attention as bench
    from mii_kernels.triton.attention import TritonAttention

    work = bench.workloads(["w1"])[0]
    if shrink > 1:  # a few short sequences: the interpreter is slow
        work = bench.Workload(work.name, [(seen // (shrink * 8), new) for seen, new in work.seqs[:4]])
    setup = bench.Setup(work, 64, torch.device(device), bench.SHAPES["llama"], fp8_kv=fp8)
    attend = TritonAttention()
    return lambda: setup.call(attend, 0)


def quantize(shrink: int, device: str, dtype: torch.dtype):
    from mii_kernels.triton.fp8_activation import quantize_per_tensor

    x = torch.randn(8192 // shrink, HIDDEN // shrink, device=device, dtype=dtype)
    return lambda: quantize_per_tensor(x)


def moe(tokens: int, shrink: int, device: str, dtype: torch.dtype):
    from mii_core.model.quantization import quantize_weight
    from mii_kernels.triton.moe import TritonQuantMoe

    hidden, ffn, top_k = HIDDEN // shrink, FFN // shrink, 2
    gate_up = quantize_weight(torch.randn(EXPERTS, 2 * ffn, hidden, device=device, dtype=dtype) * hidden ** -0.5,
                              "fp8")
    down = quantize_weight(torch.randn(EXPERTS, hidden, ffn, device=device, dtype=dtype) * ffn ** -0.5, "fp8")
    x = torch.randn(max(9, tokens // shrink), hidden, device=device, dtype=dtype)  # > 8: FP8 activations
    ids = torch.stack([torch.randperm(EXPERTS, device=device)[:top_k] for _ in range(x.shape[0])])
    weights = torch.rand(x.shape[0], top_k, device=device)
    experts = TritonQuantMoe()
    return lambda: experts(x, weights, ids, gate_up, down, "silu")


# the raw page's columns a digest line shows (Nsight Compute's metric names, the first present of each tuple),
# then the stall reasons. The H200's ncu (2026-12-03) names DRAM's share gpu__dram_throughput and times in ns.
DIGEST_COLUMNS = (("DRAM %", ("gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed",
                              "dram__throughput.avg.pct_of_peak_sustained_elapsed")),
                  ("occupancy %", ("sm__warps_active.avg.pct_of_peak_sustained_active",)),
                  ("registers", ("launch__registers_per_thread",)), ("grid", ("launch__grid_size",)))
TIME_COLUMN, DRAM_RATE_COLUMN = "gpu__time_duration.sum", "dram__bytes.sum.per_second"
MICROSECONDS_PER = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3,
                    "second": 1e6, "s": 1e6}
STALL_MARK = "issue_stalled_"


def digest(csv_path: str, top: int = 5) -> list[str]:
    """One line per profiled kernel from ``ncu --csv --page raw``'s output: its time in µs (converted from the
    units row's), DRAM read+write rate in TB/s and share of peak, occupancy, registers and grid, then the
    ``top`` warp stall reasons (cycles per issued instruction)."""
    import csv

    with open(csv_path, newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    start = next((i for i, r in enumerate(rows) if "Kernel Name" in r), None)
    if start is None:
        return [f"no kernel rows in {csv_path}"]
    header, units, lines = rows[start], dict(zip(rows[start], rows[start + 1])), []
    for row in rows[start + 2:]:
        values = dict(zip(header, row))
        shown = [f"µs {_microseconds(values.get(TIME_COLUMN), units.get(TIME_COLUMN))}",
                 f"DRAM TB/s {_terabytes_per_second(values.get(DRAM_RATE_COLUMN), units.get(DRAM_RATE_COLUMN))}"]
        shown += [f"{label} {next((values[c] for c in columns if c in values), '?')}" for label, columns in DIGEST_COLUMNS]
        stalls = sorted(((_number(v), k.split(STALL_MARK)[1].split("_per_")[0]) for k, v in values.items()
                         if STALL_MARK in k and k.endswith("per_issue_active.ratio")), reverse=True)[:top]
        reasons = ", ".join(f"{name} {value:.2f}" for value, name in stalls if value is not None)
        lines.append(f"{values.get('Kernel Name', '?')[:60]}: {', '.join(shown)}; stalls: {reasons or '?'}")
    return lines


def _microseconds(text: str | None, unit: str | None) -> str:
    value, factor = _number(text or ""), MICROSECONDS_PER.get(unit or "")
    return "?" if value is None or factor is None else f"{value * factor:.1f}"


def _terabytes_per_second(text: str | None, unit: str | None) -> str:
    value = _number(text or "")
    return "?" if value is None or unit != "byte/s" else f"{value / 1e12:.2f}"


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kernels", default="all", help="comma list of " + ",".join(KERNELS) + ", or all")
    p.add_argument("--shrink", type=int, default=1, help="divide the shapes by this (a CPU smoke run)")
    p.add_argument("--digest", metavar="CSV", help="print the digest of ncu's raw CSV instead of launching")
    args = p.parse_args(argv)
    args.kernels = list(KERNELS) if args.kernels == "all" else [k for k in args.kernels.split(",") if k]
    unknown = set(args.kernels) - set(KERNELS)
    if unknown:
        p.error(f"unknown kernels {sorted(unknown)}; choose from {', '.join(KERNELS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.digest:
        print("\n".join(digest(args.digest)))
        return 0
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and args.shrink == 1:
        sys.exit("ncu_kernels.py needs a CUDA GPU (or --shrink for a CPU smoke run)")
    dtype = torch.bfloat16 if device == "cuda" else torch.float16
    builders = {
        "gemv_fp8": lambda: [("gemv_fp8", gemv(True, args.shrink, device, dtype))],
        "gemv_bf16": lambda: [("gemv_bf16", gemv(False, args.shrink, device, dtype))],
        "attention_fp8": lambda: [("attention_fp8", attention(True, args.shrink, device))],
        "attention_bf16": lambda: [("attention_bf16", attention(False, args.shrink, device))],
        "quantize": lambda: [("quantize", quantize(args.shrink, device, dtype))],
        "moe_fp8": lambda: [(f"moe_fp8 {t} tokens", moe(t, args.shrink, device, dtype)) for t in (8192, 256)],
    }
    for kernel in args.kernels:
        for name, launch in builders[kernel]():
            run_twice(name, launch, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
