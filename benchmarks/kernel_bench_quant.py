"""The quantized GEMV's tiles against the first weight-only kernel and bf16 on the decode step's projections.

    python3 benchmarks/kernel_bench_quant.py [--modes fp8,wf6af16] [--tokens 1,2,4,8] [--configs default,...] \
        [--layers 32] [--out $OUT/kernel_quant.json]

The chain of kernel_bench_linear.py (every projection of a Llama-3-8B-shaped model, 32 layers and the LM head,
in ONE CUDA graph, replayed) with each linear quantized in each mode (the LM head too, so the figures compare
weight bytes alike; the engine keeps its head in bf16). For each mode and token count T: the chain through
every ``quant_gemv.CONFIGS`` entry, through quant_linear.py's first weight-only kernel ("tl.dot tile"), and in
bf16 through the Triton GEMV's default tiles and cuBLAS. Each row: median ms of a replay, the weight read rate
(bytes of codes / time) and the largest difference from the dequantizing reference relative to its largest
value. The last lines name the fastest tiles per mode and T, and the variable that selects them
(``MII_TRITON_QUANT_GEMV_CONFIG`` for FP8, ``MII_TRITON_QUANT_GEMV_FP6_CONFIG`` for FP6). ``--shrink N`` and
``--layers``: a CPU smoke run under TRITON_INTERPRET=1 (figures meaningless).

FP6 (wf6af16) runs the GEMV since its codes are stored in bit planes (mii_core/model/quant_formats.py); its
tiles are untuned guesses and its speed has not been measured. To pick them on a GPU:

    python3 benchmarks/kernel_bench_quant.py --modes wf6af16 --tokens 1,2,8 --out $OUT/kernel_quant_fp6.json

(every ``quant_gemv.CONFIGS`` entry, among them the FP6-minded "k4096" and "n16_k2048", beside the tl.dot kernel
and bf16); issue 18's target for the whole step is 0.8x bf16's time, the weight bytes' floor about 0.4x.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernel_bench_linear import build_weights, chain_runner, decode_order, device_and_dtype  # noqa: E402
from ceilings import _graphed, median_ms  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modes", default="fp8,wf6af16")
    p.add_argument("--tokens", default="1,2,4,8")
    p.add_argument("--configs", default=None, help="comma list of quant_gemv.CONFIGS names (default: all)")
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--shrink", type=int, default=1)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--fp6-ptx", choices=("off", "on", "both"), default="both",
                   help="FP6's GEMV rows with the decode by inline PTX (MII_TRITON_FP6_PTX=1), named CONFIG+ptx")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    args.tokens = [int(t) for t in args.tokens.split(",")]
    return args


def time_chain(op, chain, tokens, device, dtype, reps):
    """kernel_bench_linear's chain timing, over any weights' bytes (codes for quantized ones)."""
    run = chain_runner(op, chain, tokens, device, dtype)
    ms = median_ms(_graphed(run) if device == "cuda" else run, warmup=3, reps=reps)
    return ms, sum(w.data.numel() * w.data.element_size() for w in chain) / (ms * 1e9)


def max_rel_diff(op, chain, tokens, device, dtype, reference):
    worst = 0.0
    for w in (chain[0], chain[3], chain[-1]):  # a qkv, a down and the head
        x = torch.randn(tokens, w.shape[1], device=device, dtype=dtype)
        want = reference(x, w, None).float()
        worst = max(worst, ((op(x, w, None).float() - want).abs().max() / want.abs().max()).item())
    return worst


def gemv_ops(quant_gemv, names, mode, fp6_ptx):
    """{row name: op} for each GEMV config: FP6's with the plain decode, the PTX one (row "NAME+ptx") or both."""
    ptx_choices = {"off": (False,), "on": (True,), "both": (False, True)}[fp6_ptx] if mode == "wf6af16" else (False,)
    return {name + ("+ptx" if ptx else ""): (lambda x, w, b, t=quant_gemv.launch_config(name), p=ptx:
                                             quant_gemv.quant_gemv(x, w, b, t, fp6_ptx=p))
            for name in names for ptx in ptx_choices}


def gemv_setting(row_name):
    """A GEMV row's name as the settings that select it ("k4096+ptx" is k4096 with MII_TRITON_FP6_PTX=1)."""
    config, ptx, _ = row_name.partition("+ptx")
    return config + (" MII_TRITON_FP6_PTX=1" if ptx else "")


def main(argv=None):
    args = parse_args(argv)
    device, dtype = device_and_dtype(args.shrink, "kernel_bench_quant.py")
    from mii_core.model.quantization import quantize_weight
    from mii_kernels.torch_ref.quant_linear import quant_linear as reference
    from mii_kernels.triton import linear as triton_linear, quant_gemv, quant_linear
    bf16_chain = decode_order(build_weights(args.layers, args.shrink, device, dtype))
    print(f"{torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}, torch {torch.__version__}, {dtype}, "
          f"{args.layers} layers + LM head, one graph per figure; columns: T, ms, TB/s of weight bytes, max diff")
    rows = []
    for tokens in args.tokens:
        for name, op in (("bf16 cuBLAS", F.linear), ("bf16 Triton", triton_linear.TritonLinear())):
            ms, tbs = time_chain(op, bf16_chain, tokens, device, dtype, args.reps)
            rows.append(dict(mode="bf16", config=name, tokens=tokens, ms=ms, tb_s=tbs, max_rel_diff=0.0))
            print(f"{'bf16':8s} {name:14s} {tokens:3d} {ms:8.3f} {tbs:6.3f}", flush=True)
    names = args.configs.split(",") if args.configs else sorted(quant_gemv.CONFIGS)
    for mode in args.modes.split(","):
        chain = [quantize_weight(w, mode) for w in bf16_chain]
        ops = {"tl.dot tile": quant_linear.weight_only_linear}
        ops.update(gemv_ops(quant_gemv, names, mode, args.fp6_ptx))
        for tokens in args.tokens:
            for name, op in ops.items():
                ms, tbs = time_chain(op, chain, tokens, device, dtype, args.reps)
                diff = max_rel_diff(op, chain, tokens, device, dtype, reference)
                rows.append(dict(mode=mode, config=name, tokens=tokens, ms=ms, tb_s=tbs, max_rel_diff=diff))
                print(f"{mode:8s} {name:14s} {tokens:3d} {ms:8.3f} {tbs:6.3f} {diff:8.1e}", flush=True)
        del chain
    fastest = {}
    for mode in args.modes.split(","):
        env_var = quant_gemv.FP6_CONFIG_ENV if mode == "wf6af16" else quant_gemv.CONFIG_ENV
        for tokens in args.tokens:
            candidates = [r for r in rows if r["mode"] == mode and r["tokens"] == tokens]
            best = min(candidates, key=lambda r: r["ms"])
            gemv = min((r for r in candidates if r["config"] != "tl.dot tile"), key=lambda r: r["ms"])
            bf16 = min(r["ms"] for r in rows if r["mode"] == "bf16" and r["tokens"] == tokens)
            fastest[f"{mode}/{tokens}"] = best["config"]
            print(f"{mode} T={tokens}: fastest {best['config']} {best['ms']:.3f} ms ({best['tb_s']:.2f} TB/s); "
                  f"best bf16 {bf16:.3f} ms: {bf16 / best['ms']:.2f}x; fastest GEMV tiles "
                  f"{env_var}={gemv_setting(gemv['config'])} {gemv['ms']:.3f} ms")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "rows": rows,
                       "fastest": fastest}, f, indent=1)


if __name__ == "__main__":
    main()
