"""Where a profiled step's time goes: kernel (or, on the CPU, operator) names sorted into categories.

The rules are one table of (category, pattern); a name takes the category of the first pattern found in it
(re.search, case-insensitive), else "other". Most patterns are plain substrings of the names cuBLAS, CUTLASS
and PyTorch give their kernels (and of aten operator names, for the CPU path). Our Triton kernels
(kernels/mii_kernels/triton, the functions launched with ``kernel[grid](...)``) are matched by their whole
name, because some are generic words PyTorch uses too (PyTorch's sums run ``at::native::reduce_kernel<...>``,
our split-key attention combines its partial results in ``_reduce_kernel``); an old Triton's ``_0d1d...``
suffix is allowed. Order matters: the MoE, attention, rotary and norm kernels come before the GEMM rule.

What each category holds:
- gemm/linear: cuBLAS/cuBLASLt (``*gemm*``, ``nvjet*``, ``*xmma*``, ``splitKreduce``), CUTLASS, torch._scaled_mm
  (fp8), our Triton GEMV (linear.py ``_gemv_kernel``) and weight-only fp8/fp6 GEMM (quant_linear.py
  ``_weight_only_kernel``); on the CPU ``aten::mm`` / ``addmm`` / ``bmm``
- attention: our paged attention (attention.py ``_prefill_kernel``, ``_decode_kernel``, ``_reduce_kernel``),
  flash / fmha / SDPA kernels
- moe: moe.py's align kernels (picks sorted by expert: ``_count_kernel``, ``_offsets_kernel``,
  ``_scatter_kernel``; ``_align_kernel`` before 2026-12-03), ``_gate_up_kernel``, ``_down_kernel``
- norm: norms.py ``_rms_kernel``, ``_layer_kernel`` and any ``*norm*``
- rotary+kv_write: rotary.py ``_rotary_write_kernel`` (rotates q and k and writes k, v, FP8-quantized with
  an FP8 KV cache, into the paged cache)
- fp8_act_quantize: fp8_activation.py ``_amax_kernel`` and ``_quantize_kernel`` (the activations of fp8 mode's
  many-token steps: their absmax, then their codes)
- sampling/logits: softmax, top-k, argmax, sort. A greedy step samples with argmax alone, so on the MoE
  family the softmax and top-k here are the router's (mii_core/model/moe.py); names cannot tell them apart.
- elementwise/copy: memcpy / memset, fills, copies, PyTorch's elementwise kernels, index / gather / cat,
  embedding, our gated activation (activations.py ``_gated_kernel``: act(gate) * up)
- other: anything else (e.g. PyTorch reductions that are not argmax)
"""
from __future__ import annotations

import re

CATEGORIES = ("gemm/linear", "attention", "moe", "norm", "rotary+kv_write", "fp8_act_quantize", "sampling/logits",
              "elementwise/copy", "other")
IDLE = "idle GPU (wall - kernels)"


def ours(*names: str) -> str:
    """A pattern matching exactly these Triton kernel names (plus an old Triton's ``_0d1d2d`` suffix)."""
    return rf"^(?:{'|'.join(names)})(?:_\w+)?$"


RULES = (
    ("moe", ours("_align_kernel", "_count_kernel", "_offsets_kernel", "_scatter_kernel", "_gate_up_kernel",
                 "_down_kernel")),
    ("moe", r"moe|fused_experts"),
    ("attention", ours("_prefill_kernel", "_decode_kernel", "_reduce_kernel")),
    ("attention", r"flash|fmha|attention|attn|sdpa"),
    ("rotary+kv_write", ours("_rotary_write_kernel")),
    ("rotary+kv_write", r"rotary|rope|reshape_and_cache"),
    ("norm", ours("_rms_kernel", "_layer_kernel")),
    ("norm", r"norm"),
    ("fp8_act_quantize", ours("_amax_kernel", "_quantize_kernel")),
    ("gemm/linear", ours("_gemv_kernel", "_weight_only_kernel")),
    ("gemm/linear", r"gemm|gemv|nvjet|xmma|cutlass|cublas|splitkreduce|s16816|s1688|"
                    r"aten::(?:_scaled_mm|addmm|mm|bmm)$"),
    ("sampling/logits", r"softmax|topk|argmax|sort|multinomial"),
    ("elementwise/copy", ours("_gated_kernel")),
    ("elementwise/copy", r"memcpy|memset|fill|copy|elementwise|index|gather|scatter|cat|embedding|"
                         r"aten::(?:add|mul|sub|div|neg|silu|gelu|tanh|exp|pow|rsqrt|where|clamp|to|clone)_?$"),
)
_COMPILED = tuple((category, re.compile(pattern, re.IGNORECASE)) for category, pattern in RULES)


def categorize(name: str) -> str:
    """The category of a kernel (or CPU operator) name: the first rule whose pattern is found in it."""
    for category, pattern in _COMPILED:
        if pattern.search(name):
            return category
    return "other"


def breakdown(kernel_us: list[tuple[str, float]], wall_ms: float, top: int = 14) -> dict:
    """Per category ms and % of ``wall_ms``, the idle rest, and the ``top`` kernels by time, from
    (name, microseconds) pairs, one per kernel launch."""
    per_name: dict[str, list] = {}
    for name, us in kernel_us:
        entry = per_name.setdefault(name, [0.0, 0])
        entry[0] += us / 1e3
        entry[1] += 1
    categories = dict.fromkeys(CATEGORIES, 0.0)
    for name, (ms, _) in per_name.items():
        categories[categorize(name)] += ms
    kernel_ms = sum(categories.values())
    # the kernels of a step can outlast its wall time only by the profiler's rounding: no negative idle
    categories[IDLE] = max(wall_ms - kernel_ms, 0.0)
    pct = {k: 100.0 * v / wall_ms if wall_ms > 0 else 0.0 for k, v in categories.items()}
    ranked = sorted(per_name.items(), key=lambda kv: -kv[1][0])[:top]
    return {"kernel_ms": kernel_ms, "categories_ms": categories, "categories_pct": pct,
            "top_kernels": [{"name": n, "category": categorize(n), "ms": ms, "calls": calls}
                            for n, (ms, calls) in ranked]}
