"""Times each Triton op of mii_kernels.triton against its PyTorch reference, on CUDA, at real shapes.

    python3 benchmarks/kernel_bench_ops.py [--ops rms_norm,moe_experts] [--tokens 1,64,4096] [--graph] \
        [--moe-shape mixtral|qwen3_moe] [--moe-configs default,per_expert_m16] [--moe-mode fp8] \
        [--out $OUT/kernel_ops.json]

Shapes: Llama-3-8B (hidden 4096, 32 query / 8 KV heads of 128, intermediate 14336) for the norms, the
gated activation and rotary + KV write; Mixtral (hidden 4096, 8 experts of 14336, top-2) for the MoE, or with
``--moe-shape qwen3_moe`` Qwen3-30B-A3B's (hidden 2048, 128 experts of 768, top-8). ``--moe-configs`` times the
MoE once per named launch config of ``mii_kernels.triton.moe.CONFIGS`` (rows ``moe_experts[name]``);
``--moe-mode fp8`` (or wf8af16, wf6af16) times the quantized experts instead (``quant_moe_experts``, rows
``moe_experts/fp8[name]``; "fp8" multiplies FP8 activations with the codes above 8 tokens), against the
dequantizing reference, the bytes counted as the codes'.
bfloat16. Each row prints the median time of the Triton op and of the reference (``triton.testing.do_bench``,
L2 flushed between calls), the speed-up, the bandwidth the Triton op reaches over the bytes it must move,
and for the MoE its TFLOP/s. ``--graph`` times under CUDA-graph replay instead (launch overhead left out);
a reference that synchronises with the host (the MoE's) cannot be captured and is timed plainly, marked *.
Each row also prints the largest difference from the reference relative to its largest value.
``--amax`` hands the norms and the gated activation a float32 absmax to join (mode fp8's producers of a
per-tensor-quantized input; rows ``op+amax``), to price the join against the plain op. ``fp8_quantize`` is the
FP8 activation quantization a GEMM step takes when no producer joined the absmax (absmax pass + codes), at
the o projection's input ([T, 4096]) and the down projection's ([T, 14336]: rows ``fp8_quantize/ffn``).
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

HIDDEN, Q_HEADS, KV_HEADS, HEAD, FFN = 4096, 32, 8, 128, 14336
BLOCK_SIZE = 64
DTYPE = torch.bfloat16
DEVICE = "cuda"
# (hidden, experts, features an expert, top-k); "tiny" is the CPU test's
MOE_SHAPES = {"mixtral": (4096, 8, 14336, 2), "qwen3_moe": (2048, 128, 768, 8), "tiny": (32, 8, 48, 2)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ops", default="rms_norm,offset_rms_norm,layer_norm,gated_activation,rotary_write_kv,moe_experts")
    p.add_argument("--tokens", default="1,64,256,1024,4096", help="comma list of token counts T")
    p.add_argument("--graph", action="store_true", help="time under CUDA-graph replay")
    p.add_argument("--moe-shape", default="mixtral", choices=sorted(MOE_SHAPES))
    p.add_argument("--moe-configs", default="default", help="comma list of mii_kernels.triton.moe.CONFIGS names")
    p.add_argument("--moe-mode", default=None, choices=["fp8", "wf8af16", "wf6af16"],
                   help="quantize the experts in this mode (default: bf16 experts)")
    p.add_argument("--amax", action="store_true", help="the norms and gated activation join an absmax as they write")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    args = p.parse_args(argv)
    args.ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    args.tokens = [int(t) for t in args.tokens.split(",") if t.strip()]
    args.moe_configs = [c.strip() for c in args.moe_configs.split(",") if c.strip()]
    return args


def rand(*shape, scale=1.0, dtype=None):
    return (torch.randn(*shape, device=DEVICE) * scale).to(dtype or DTYPE)


def norm_case(op, tokens):
    """rms_norm / offset_rms_norm / layer_norm with the residual add, as every decoder layer after the first
    calls them."""
    x, residual, weight, bias = rand(tokens, HIDDEN), rand(tokens, HIDDEN), rand(HIDDEN), rand(HIDDEN)
    if op in ("rms_norm", "offset_rms_norm"):
        args = (x, weight, 1e-5)
    else:
        args = (x, weight, bias, 1e-5)
    moved = (4 * tokens * HIDDEN + 2 * HIDDEN) * x.element_size()  # x, residual in; normed, summed out
    return args, {"residual": residual}, moved, 0.0


def gated_case(tokens):
    x = rand(tokens, 2 * FFN, scale=3.0)
    return (x, "silu"), {}, 3 * tokens * FFN * x.element_size(), 0.0


def rotary_case(tokens):
    qkv = rand(tokens, (Q_HEADS + 2 * KV_HEADS) * HEAD)
    q, k, v = qkv.split([Q_HEADS * HEAD, KV_HEADS * HEAD, KV_HEADS * HEAD], dim=-1)
    q, k, v = q.view(tokens, Q_HEADS, HEAD), k.view(tokens, KV_HEADS, HEAD), v.view(tokens, KV_HEADS, HEAD)
    theta = torch.rand(tokens, HEAD // 2, device="cuda") * 100
    cos, sin = (torch.cat((t, t), dim=-1).to(DTYPE) for t in (theta.cos(), theta.sin()))
    blocks = tokens // BLOCK_SIZE + 8
    k_cache = torch.zeros(blocks, BLOCK_SIZE, KV_HEADS, HEAD, dtype=DTYPE, device="cuda")
    v_cache = torch.zeros_like(k_cache)
    slots = torch.randperm(blocks * BLOCK_SIZE, device="cuda")[:tokens]
    # q, k, v in; q out, k, v to the cache; cos and sin in
    moved = (2 * Q_HEADS + 4 * KV_HEADS) * HEAD * tokens * q.element_size() + 2 * tokens * HEAD * cos.element_size()
    return (q, k, v, cos, sin, HEAD, k_cache, v_cache, slots), {}, moved, 0.0


# bytes a weight of each quantization mode (the codes; scales are a row's few bytes)
WEIGHT_BYTES = {"fp8": 1.0, "wf8af16": 1.0, "wf6af16": 0.75}


def moe_case(tokens, shape="mixtral", mode=None):
    hidden, experts, ffn, top_k = MOE_SHAPES[shape]
    x = rand(tokens, hidden)
    logits = torch.randn(tokens, experts, device=DEVICE)
    weights, ids = logits.softmax(dim=-1).topk(top_k, dim=-1)
    w_gate_up = rand(experts, 2 * ffn, hidden, scale=hidden ** -0.5)
    w_down = rand(experts, hidden, ffn, scale=ffn ** -0.5)
    weight_bytes = x.element_size()
    if mode is not None:
        from mii_core.model.quantization import quantize_weight
        w_gate_up, w_down, weight_bytes = quantize_weight(w_gate_up, mode), quantize_weight(w_down, mode), \
            WEIGHT_BYTES[mode]
    used = ids.unique().numel()  # each expert that has a token streams its weights once
    moved = used * 3 * ffn * hidden * weight_bytes + 2 * tokens * hidden * x.element_size()
    flops = 2.0 * tokens * top_k * 3 * ffn * hidden
    return (x, weights, ids, w_gate_up, w_down, "silu"), {}, moved, flops


def quantize_case(op, tokens):
    x = rand(tokens, FFN if op.endswith("/ffn") else HIDDEN, scale=3.0)
    return (x,), {}, 2 * x.numel() * x.element_size() + x.numel(), 0.0  # read twice, codes written


def reference_codes(x):
    """The per-tensor e4m3 codes of quant_formats (the contract's), as the kernels' first result."""
    from mii_core.model.quant_formats import activation_codes, tensor_scale
    return activation_codes(x, tensor_scale(x))


def build(op, tokens, moe_shape="mixtral", moe_mode=None):
    if op.startswith("fp8_quantize"):
        return quantize_case(op, tokens)
    if op in ("rms_norm", "offset_rms_norm", "layer_norm"):
        return norm_case(op, tokens)
    if op == "moe_experts":
        return moe_case(tokens, moe_shape, moe_mode)
    return {"gated_activation": gated_case, "rotary_write_kv": rotary_case}[op](tokens)


def implementations(op, moe_config=None, moe_mode=None):
    """(ours, the reference); the MoE's ours with the named launch config (quantized: ``quant_moe_experts``)."""
    from importlib import import_module
    if op.startswith("fp8_quantize"):
        from mii_kernels.triton.fp8_activation import quantize_per_tensor
        return quantize_per_tensor, reference_codes
    if op == "moe_experts" and moe_mode is not None:
        from mii_kernels.torch_ref.quant_linear import quant_moe_experts
        from mii_kernels.triton.moe import TritonQuantMoe
        return TritonQuantMoe(moe_config), quant_moe_experts
    module = {"rms_norm": "norms", "offset_rms_norm": "norms", "layer_norm": "norms", "gated_activation": "activations",
              "rotary_write_kv": "rotary", "moe_experts": "moe"}[op]
    triton_module = import_module(f"mii_kernels.triton.{module}")
    ours = triton_module.TritonMoe(moe_config) if op == "moe_experts" else getattr(triton_module, op)
    return ours, getattr(import_module(f"mii_kernels.torch_ref.{module}"), op)


def time_ms(fn, graph):
    """Median milliseconds; under --graph the replay of a captured graph, if the op can be captured."""
    from triton.testing import do_bench, do_bench_cudagraph
    if graph:
        try:
            return do_bench_cudagraph(fn, rep=100, return_mode="median"), ""
        except Exception:  # a host sync inside the op: capture is impossible
            torch.cuda.synchronize()
    return do_bench(fn, warmup=25, rep=100, return_mode="median"), "*" if graph else ""


def first(result):
    return result[0] if isinstance(result, tuple) else result


AMAX_OPS = ("rms_norm", "offset_rms_norm", "layer_norm", "gated_activation")


def run_case(op, tokens, graph, moe_shape="mixtral", moe_config=None, moe_mode=None, amax=False):
    args, kwargs, moved, flops = build(op, tokens, moe_shape, moe_mode)
    ours, reference = implementations(op, moe_config, moe_mode)
    ref_kwargs = kwargs
    if amax and op in AMAX_OPS:  # each side joins into its own absmax; a maximum repeated stays the same
        kwargs = dict(kwargs, amax=torch.zeros((), dtype=torch.float32, device=DEVICE))
        ref_kwargs = dict(ref_kwargs, amax=torch.zeros((), dtype=torch.float32, device=DEVICE))
        op = f"{op}+amax"
    got, want = first(ours(*args, **kwargs)).float(), first(reference(*args, **ref_kwargs)).float()
    error = ((got - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()
    if "+amax" in op:  # the joined absmax is a result too: the larger of its difference and the output's
        error = max(error, ((kwargs["amax"] - ref_kwargs["amax"]).abs() / ref_kwargs["amax"].clamp_min(1e-30)).item())
    ours_ms, _ = time_ms(lambda: ours(*args, **kwargs), graph)
    ref_ms, mark = time_ms(lambda: reference(*args, **ref_kwargs), graph)
    label = (f"{op}/{moe_mode}" if moe_mode else op) + (f"[{moe_config}]" if moe_config else "")
    return {"op": label, "tokens": tokens, "triton_ms": ours_ms, "reference_ms": ref_ms, "reference_mark": mark,
            "speedup": ref_ms / ours_ms, "triton_gb_s": moved / ours_ms / 1e6,
            "triton_tflop_s": flops / ours_ms / 1e9 if flops else None, "max_rel_diff": error}


def print_row(row):
    tflops = f"{row['triton_tflop_s']:8.1f}" if row["triton_tflop_s"] else " " * 8
    print(f"{row['op']:32s} {row['tokens']:6d} {row['triton_ms']:10.4f} {row['reference_ms']:10.4f}"
          f"{row['reference_mark']:1s} {row['speedup']:8.2f} {row['triton_gb_s']:9.0f} {tflops} "
          f"{row['max_rel_diff']:10.2e}", flush=True)


def main(argv=None):
    args = parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("kernel_bench_ops.py needs a CUDA GPU")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, bfloat16, "
          f"{'CUDA-graph replay' if args.graph else 'plain launches'}")
    print(f"{'op':32s} {'T':>6s} {'triton ms':>10s} {'ref ms':>10s}  {'speedup':>8s} {'GB/s':>9s} "
          f"{'TFLOP/s':>8s} {'max diff':>10s}")
    rows = []
    for op in args.ops:
        for config in (args.moe_configs if op == "moe_experts" else [None]):
            for tokens in args.tokens:
                rows.append(run_case(op, tokens, args.graph, args.moe_shape, config, args.moe_mode, args.amax))
                print_row(rows[-1])
                torch.cuda.empty_cache()
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "graph": args.graph, "moe_shape": args.moe_shape,
                       "moe_mode": args.moe_mode, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
