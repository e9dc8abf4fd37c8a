"""The Triton GEMV (``linear``) against cuBLAS on the decode step's projections, each config side by side.

    python3 benchmarks/kernel_bench_linear.py [--tokens 1,2,4,8] [--configs default,lanes,...] \
        [--tiles '{"1": {"mode": "lanes", "block_n": 8, "block_k": 512, "warps": 4, "stages": 1}}'] \
        [--layers 32] [--out $OUT/kernel_linear.json]

Every projection of a Llama-3-8B-shaped model (32 layers of qkv 4096→6144, o 4096→4096, gate|up
4096→28672, down 14336→4096, then the LM head 4096→128256; random bf16 weights, 15.0 GB) is captured
in ONE CUDA graph and replayed, as a graph-replayed decode step runs them; for each token count T the
chain runs once per Triton config (``mii_kernels.triton.linear.CONFIGS``, plus ``--tiles`` as the config
"custom") and once through ``torch.nn.functional.linear`` (cuBLAS). Each row prints the median ms of a
replay and the weight read rate (bytes of weights / time), then the same per projection kind (its 32
matrices in a graph of their own) so a weak shape shows. The last lines name the fastest config per T
and the per-T mix of the fastest tiles, ready to paste into CONFIGS. Each config's output is checked
against cuBLAS (largest difference relative to the largest value; bf16 rounding is 4e-3).

``--shrink N`` divides every dimension by N and ``--layers`` cuts the depth: a smoke run on a CPU (under
TRITON_INTERPRET=1, eager instead of a graph, figures meaningless).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ceilings import _graphed, median_ms  # noqa: E402

HIDDEN, QKV, FFN, VOCAB, LAYERS = 4096, 6144, 14336, 128256, 32
KINDS = {"qkv": (HIDDEN, QKV), "o": (HIDDEN, HIDDEN), "gate_up": (HIDDEN, 2 * FFN), "down": (FFN, HIDDEN)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", default="1,2,4,8", help="comma list of token counts T")
    p.add_argument("--configs", default=None, help="comma list of CONFIGS names (default: all)")
    p.add_argument("--tiles", default=None, help="JSON {T: tile} tried as the config 'custom'")
    p.add_argument("--layers", type=int, default=LAYERS)
    p.add_argument("--reps", type=int, default=20, help="timed replays per figure (median)")
    p.add_argument("--shrink", type=int, default=1, help="divide every dimension by this (CPU smoke runs)")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    args = p.parse_args(argv)
    args.tokens = [int(t) for t in args.tokens.split(",") if t.strip()]
    return args


def build_weights(layers, shrink, device, dtype):
    """kind -> list of [N, K] weights, the LM head as kind "lm_head"; values ~ N(0, 1/K), filled in place."""
    def weight(features_in, features_out):
        w = torch.empty(features_out // shrink, features_in // shrink, device=device, dtype=dtype)
        return w.normal_(0.0, (features_in // shrink) ** -0.5)
    weights = {kind: [weight(*shape) for _ in range(layers)] for kind, shape in KINDS.items()}
    weights["lm_head"] = [weight(HIDDEN, VOCAB)]
    return weights


def decode_order(weights):
    """Layer by layer, qkv, o, gate|up, down, then the LM head: the order of a decode step."""
    layers = zip(*(weights[kind] for kind in KINDS))
    return [w for layer in layers for w in layer] + weights["lm_head"]


def chain_runner(linear, chain, tokens, device, dtype):
    inputs = {w.shape[1]: torch.randn(tokens, w.shape[1], device=device, dtype=dtype) for w in chain}

    def run():
        for w in chain:
            linear(inputs[w.shape[1]], w, None)
    return run


def time_chain(linear, chain, tokens, device, dtype, reps):
    run = chain_runner(linear, chain, tokens, device, dtype)
    if device == "cuda":
        run = _graphed(run)
    ms = median_ms(run, warmup=3, reps=reps)
    del run
    return ms, sum(w.numel() * w.element_size() for w in chain) / (ms * 1e9)  # TB/s


def max_rel_diff(linear, weights, tokens, device, dtype):
    """Largest |ours - cuBLAS| over the largest |cuBLAS|, over one matrix of each kind."""
    worst = 0.0
    for kind in weights:
        w = weights[kind][0]
        x = torch.randn(tokens, w.shape[1], device=device, dtype=dtype)
        want = F.linear(x, w).float()
        worst = max(worst, ((linear(x, w, None).float() - want).abs().max() / want.abs().max()).item())
    return worst


def candidates(args, triton_linear):
    names = args.configs.split(",") if args.configs else sorted(triton_linear.CONFIGS)
    configs = {name: triton_linear.CONFIGS[name] for name in names}
    if args.tiles:
        configs["custom"] = {int(rows): tile for rows, tile in json.loads(args.tiles).items()}
    return configs


def bench_config(name, linear, weights, args, device, dtype, tile_for=None):
    """Rows of one config (or cuBLAS) at every T: the whole chain, then each kind alone."""
    rows = []
    for tokens in args.tokens:
        ms, tbs = time_chain(linear, decode_order(weights), tokens, device, dtype, args.reps)
        row = {"config": name, "tokens": tokens, "ms": ms, "tb_s": tbs, "kinds": {},
               "tile": tile_for(tokens) if tile_for else None,
               "max_rel_diff": max_rel_diff(linear, weights, tokens, device, dtype)}
        for kind, chain in weights.items():
            kind_ms, kind_tbs = time_chain(linear, chain, tokens, device, dtype, args.reps)
            row["kinds"][kind] = {"ms": kind_ms, "tb_s": kind_tbs}
        print_row(row)
        rows.append(row)
    return rows


def print_row(row):
    kinds = " ".join(f"{k['ms']:7.3f}/{k['tb_s']:4.2f}" for k in row["kinds"].values())
    print(f"{row['config']:14s} {row['tokens']:3d} {row['ms']:8.3f} {row['tb_s']:6.3f}  {kinds}  "
          f"{row['max_rel_diff']:8.1e}", flush=True)


def summarise(rows):
    """The fastest config per T, and the per-T mix of the fastest tiles as a CONFIGS entry."""
    mix = {}
    for tokens in sorted({r["tokens"] for r in rows}):
        at_t = [r for r in rows if r["tokens"] == tokens]
        cublas = next(r for r in at_t if r["config"] == "cublas")
        best = min((r for r in at_t if r["config"] != "cublas"), key=lambda r: r["ms"])
        print(f"T={tokens}: fastest {best['config']} {best['ms']:.3f} ms ({best['tb_s']:.2f} TB/s), cuBLAS "
              f"{cublas['ms']:.3f} ms ({cublas['tb_s']:.2f} TB/s): {cublas['ms'] / best['ms']:.3f}x")
        mix[tokens] = best["tile"]
    print("fastest tiles per T:", json.dumps({str(t): tile for t, tile in mix.items()}))
    return mix


def device_and_dtype(shrink: int, script: str) -> tuple[str, torch.dtype]:
    """("cuda", bf16) on a GPU; on a CPU ("cpu", float16) for a shrunk smoke run, else the script exits."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and shrink == 1:
        sys.exit(f"{script} needs a CUDA GPU (or --shrink for a CPU smoke run)")
    return device, torch.bfloat16 if device == "cuda" else torch.float16


def main(argv=None):
    args = parse_args(argv)
    device, dtype = device_and_dtype(args.shrink, "kernel_bench_linear.py")
    from mii_kernels.triton import linear as triton_linear
    weights = build_weights(args.layers, args.shrink, device, dtype)
    total = sum(w.numel() * w.element_size() for w in decode_order(weights))
    print(f"{torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}, torch {torch.__version__}, "
          f"{dtype}, {args.layers} layers + LM head, {total / 1e9:.2f} GB of weights, one graph per figure")
    print(f"{'config':14s} {'T':>3s} {'ms':>8s} {'TB/s':>6s}  ms/TB/s per kind: {', '.join(weights)}  "
          f"{'max diff':>8s}")
    configs = candidates(args, triton_linear)
    rows = bench_config("cublas", lambda x, w, b: F.linear(x, w, b), weights, args, device, dtype)
    for name, config in configs.items():
        op = triton_linear.TritonLinear(config)
        rows += bench_config(name, op, weights, args, device, dtype,
                             lambda tokens, tiles=op.tiles: triton_linear.tile_for(tokens, tiles))
    mix = summarise(rows)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                       "weight_bytes": total, "rows": rows, "fastest_tiles": mix}, f, indent=1)


if __name__ == "__main__":
    main()
