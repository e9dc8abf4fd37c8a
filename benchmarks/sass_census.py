"""What the Triton kernels compile to on an H100/H200, without one: each scenario's launches (real-shape
constexprs, tiny data) recorded under the interpreter, compiled for sm_90 by Triton's own compiler as a GPU
launch would specialise them (16-byte alignment, integers of 1, the GPU-only flags set), disassembled with the cuobjdump
Triton ships, and counted by opcode; with each kernel's registers a thread (``cuobjdump -res-usage``) and
shared memory a program, which decide how many programs an SM holds.

    .venv/bin/python benchmarks/sass_census.py [--scenarios attention,quant,activation] [--opcodes F2F,LDS]

A count is of instructions in the kernel's code, not of instructions executed: read it to compare two
variants of one kernel (a conversion per element, a byte-wide shared-memory load), never as a time. This is
how the 2026-12-03 session found the FP8 KV attention's per-element float16 → bfloat16 conversions
(``F2F.BF16.F16``) and its V tile read from shared memory a byte at a time (``LDS.U8``).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))  # support.gpu_compile
DEFAULT_OPCODES = "HMMA,HGMMA,F2F,F2FP,LDS,LDSM,LDG,LDGSTS,STL"
# the constexprs worth printing beside a kernel's name
SHOWN = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "MODE", "FORMAT", "FP8_KV", "FP8_F16_DOTS", "V_SLOT_MAJOR", "FP8_ACTIVATIONS",
         "NATIVE_E4M3", "QUANTIZE", "D", "GATED")


def _attention() -> None:
    """Llama-3-8B's decode attention (32 / 8 heads of 128) over a bf16 and an FP8 cache, with the launch config
    named by MII_TRITON_ATTENTION_CONFIG (default tiles when unset)."""
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    import kernel_bench_attention as bench
    from mii_kernels.triton.attention import TritonAttention

    work = bench.Workload("decode", [(300, 1), (500, 1), (700, 1)])
    for fp8, slot_major in ((False, False), (True, False), (True, True)):
        setup = bench.Setup(work, 64, torch.device("cpu"), bench.SHAPES["llama"], fp8_kv=fp8, v_slot_major=slot_major)
        setup.layers = 1
        setup.call(TritonAttention(), 0)


def _quant() -> None:
    """The quantized GEMV (1 and 2 tokens; at 1 also reading [gate | up], the down projection's fused
    ``gated_quant_linear``), the weight-only kernel (16 tokens) and the bf16 GEMV, bf16 activations; FP8 and
    FP6 codes."""
    import torch

    from mii_core.model.quantization import quantize_weight
    from mii_kernels.triton import linear, quant_gemv, quant_linear

    features_in, features_out = 1024, 64
    for mode, env in (("wf8af16", quant_gemv.CONFIG_ENV), ("wf6af16", quant_gemv.FP6_CONFIG_ENV)):
        weight = quantize_weight(torch.randn(features_out, features_in) * 0.03, mode)
        for tokens in (1, 2):
            quant_gemv.quant_gemv(torch.randn(tokens, features_in).bfloat16(), weight, None,
                                  quant_gemv.launch_config(None, env))
        quant_gemv.quant_gemv(torch.randn(1, 2 * features_in).bfloat16(), weight, None,
                              quant_gemv.launch_config(None, env), "silu")
        quant_linear.weight_only_linear(torch.randn(16, features_in).bfloat16(), weight)
    linear.linear(torch.randn(1, features_in).bfloat16(), torch.randn(features_out, features_in).bfloat16())


def _activation() -> None:
    """The FP8 GEMM path's activation quantization and the FP8 KV cache's rotary write."""
    import torch

    from mii_kernels.triton.fp8_activation import quantize_per_tensor
    from mii_kernels.triton.rotary import rotary_write_kv

    quantize_per_tensor(torch.randn(64, 1024).bfloat16())
    tokens, heads, kv_heads, dim = 4, 8, 2, 128
    q, k, v = (torch.randn(tokens, h, dim).bfloat16() for h in (heads, kv_heads, kv_heads))
    caches = [torch.zeros(4, 16, kv_heads, dim, dtype=torch.float8_e4m3fn) for _ in range(2)]
    rotary_write_kv(q, k, v, torch.randn(tokens, dim // 2), torch.randn(tokens, dim // 2), dim, *caches,
                    torch.arange(tokens), torch.ones(2, kv_heads))


def _moe() -> None:
    """The grouped expert GEMMs, bf16 and FP8 experts, at 16 picks (8 tokens: FP8 weight-only), then 32, 128 and
    2,048 (mode "fp8" with FP8 activations, each tile tier; wf8af16 weight-only at the last)."""
    import torch

    from mii_core.model.quantization import quantize_weight
    from mii_kernels.triton.moe import TritonMoe, TritonQuantMoe

    experts, hidden, features, top_k = 8, 128, 256, 2
    gate_up = torch.randn(experts, 2 * features, hidden) * 0.05
    down = torch.randn(experts, hidden, features) * 0.05
    for tokens in (8, 16, 64, 1024):
        x = torch.randn(tokens, hidden).bfloat16()
        ids = torch.randint(0, experts, (tokens, top_k))
        weights = torch.rand(tokens, top_k)
        TritonMoe()(x, weights, ids, gate_up.bfloat16(), down.bfloat16(), "silu")
        TritonQuantMoe()(x, weights, ids, quantize_weight(gate_up, "fp8"), quantize_weight(down, "fp8"), "silu")
    TritonQuantMoe()(x, weights, ids, quantize_weight(gate_up, "wf8af16"), quantize_weight(down, "wf8af16"), "silu")


SCENARIOS = {"attention": _attention, "quant": _quant, "activation": _activation, "moe": _moe}


def record(scenarios: list[str], path: Path) -> None:
    """Runs the scenarios under the interpreter (this process must have TRITON_INTERPRET=1 set at import)."""
    from support.gpu_compile import record_launches

    record_launches(path)
    for name in scenarios:
        SCENARIOS[name]()


def census(line: str, opcodes: list[str], sass_dir: Path | None = None) -> str:
    """One launch compiled for sm_90 (its GPU-only flags set): a line of its constexprs and opcode counts;
    its whole SASS and Triton's GPU IR written into ``sass_dir`` too when given (to read a loop's order of
    loads and math, and which tiles go through shared memory in which layout)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from support.gpu_compile import specialised, with_gpu_flags

    launch = json.loads(with_gpu_flags(line) or line)
    module = __import__(launch["module"], fromlist=[launch["name"]])
    kernel = getattr(module, launch["name"])
    signature, constexprs, attrs = specialised(kernel, launch)
    source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=launch["options"])
    with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
        cubin.write(compiled.asm["cubin"])
        cubin.flush()
        sass = subprocess.run([_cuobjdump(), "-sass", cubin.name], capture_output=True, text=True, check=True).stdout
        usage = subprocess.run([_cuobjdump(), "-res-usage", cubin.name], capture_output=True, text=True).stdout
    # registers a thread decide how many programs an SM holds, and so how many loads are in flight
    registers = re.search(r"REG:(\d+)", usage)
    shown = {k: v for k, v in launch["constexprs"].items() if k in SHOWN}
    if sass_dir is not None:
        tag = "-".join(f"{k}{v}" for k, v in shown.items())
        stem = f"{launch['name']}-{tag}-{abs(hash(line)) % 10**6}"
        (sass_dir / f"{stem}.sass").write_text(sass)
        (sass_dir / f"{stem}.ttgir").write_text(compiled.asm["ttgir"])  # the layouts and shared-memory trips
    counts = collections.Counter(m.group(1) for m in re.finditer(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z0-9_.]+)",
                                                                   sass))
    by_opcode = collections.Counter()
    for full, n in counts.items():
        by_opcode[full.split(".")[0]] += n
    parts = [f"{op} {by_opcode[op]}" for op in opcodes]
    detail = ", ".join(f"{full} {n}" for full, n in sorted(counts.items()) if full.split(".")[0] in opcodes and n)
    shared = getattr(compiled.metadata, "shared", None)  # bytes of shared memory a program: the other limit
    return (f"{launch['name']} {shown} {launch['options']}: {registers.group(1) if registers else '?'} registers, "
            f"{shared if shared is not None else '?'} B shared, "
            f"{sum(counts.values())} instructions; "
            f"{', '.join(parts)}\n    {detail}")


def _cuobjdump() -> str:
    import triton

    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma list of " + ",".join(SCENARIOS))
    p.add_argument("--opcodes", default=DEFAULT_OPCODES, help="opcodes to count (before the first '.')")
    p.add_argument("--sass-dir", type=Path, help="also write each kernel's whole SASS and TTGIR into this folder")
    p.add_argument("--record", type=Path, help=argparse.SUPPRESS)  # the child process's job
    args = p.parse_args()
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenarios {sorted(unknown)}; choose from {sorted(SCENARIOS)}")
    if args.record:
        record(scenarios, args.record)
        return
    with tempfile.TemporaryDirectory() as folder:
        launches = Path(folder) / "launches.jsonl"
        subprocess.run([sys.executable, __file__, "--scenarios", ",".join(scenarios), "--record", str(launches)],
                       env={**os.environ, "TRITON_INTERPRET": "1"}, check=True)
        lines = sorted({line for line in launches.read_text().splitlines() if line.strip()})
    os.environ.pop("TRITON_INTERPRET", None)
    if args.sass_dir:
        args.sass_dir.mkdir(parents=True, exist_ok=True)
    for line in lines:
        print(census(line, args.opcodes.split(","), args.sass_dir))


if __name__ == "__main__":
    main()
