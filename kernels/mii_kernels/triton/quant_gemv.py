"""Quantized GEMV for the few-token steps of decode: the bf16 GEMV's tiles (triton/linear.py) over FP8/FP6 codes.

At batch 1 a decode step reads every weight once, so a quantized weight (1 byte, or 6 bits, against bf16's 2)
only pays if the read runs as close to the memory bandwidth as the bf16 GEMV's does. The first weight-only
kernel (quant_linear.py) multiplied with ``tl.dot`` on a [BLOCK_K, BLOCK_N] tile with the tokens padded to 16
rows: on the H200 its Llama-3-8B decode step (W2) took 5.56 ms against bf16's 4.42. This kernel walks the
weight as the bf16 GEMV does: ``BLOCK_N`` weight rows per program, their ``K`` columns in chunks of
``BLOCK_K`` (contiguous bytes, so the loads vectorise), decoded in registers (quant_decode.py) and summed in
float32, the same modes:

* ``"lanes"`` (one token; more run as ``"reduce"``): float32 partial products per lane, summed once at the end;
* ``"reduce"``: each chunk's products summed at once, token by token;
* ``"dot"``: ``tl.dot`` with the tokens padded to 16 rows, the loads pipelined over ``stages`` buffers.

Each output column is then scaled by its row's scale (times the decoding factor) and the bias added, in
float32, rounded once to x's dtype, as the reference does. Checkpoints with a scale per group of columns take
quant_linear.py's grouped kernel. Nothing is read on the host: the step can be captured in a CUDA graph.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from mii_core.model.quantization import QuantizedWeight
from mii_kernels.triton.configs import pick_config
from mii_kernels.triton.linear import GEMV_MAX_TOKENS, tile_for
from mii_kernels.triton.quant_decode import DECODED_FACTOR, load_decoded, weight_format

QUANT_GEMV_MAX_TOKENS = GEMV_MAX_TOKENS
_MODES = {"lanes": 0, "reduce": 1, "dot": 2}
_TILE_KEYS = {"mode", "block_n", "block_k", "warps", "stages"}


def _tile(mode: str, block_n: int, block_k: int, warps: int = 4, stages: int = 1) -> dict:
    return dict(mode=mode, block_n=block_n, block_k=block_k, warps=warps, stages=stages)


_FEW = (2, 4, 8)
# Launch settings by name (env MII_TRITON_QUANT_GEMV_CONFIG, read when a kernel set builds its op), compared
# in one run by benchmarks/kernel_bench_quant.py. A weight byte here holds one (FP8) or 4/3 (FP6) weights, so
# the starting points take twice the bf16 GEMV's BLOCK_K for the same bytes per chunk.
CONFIGS: dict[str, dict[int, dict]] = {
    # the fastest FP8 tiles per T on the H200 (kernel_bench_quant.py, 2026-12-02, codes decoded by bit placement:
    # 3.23 ms for the Llama-3-8B chain at T=1 against bf16's 3.75, about bf16's time at T=2..8)
    "default": {1: _tile("lanes", 8, 1024), **{t: _tile("dot", 32, 256, stages=4) for t in _FEW}},
    "k2048": {1: _tile("lanes", 8, 2048), **{t: _tile("dot", 32, 256, stages=4) for t in _FEW}},
    "bf16_tiles": {1: _tile("lanes", 8, 1024), **{t: _tile("dot", 32, 128, stages=5) for t in _FEW}},
    "lanes_n16": {1: _tile("lanes", 16, 1024), **{t: _tile("reduce", 16, 512) for t in _FEW}},
    "lanes_n4": {1: _tile("lanes", 4, 4096), **{t: _tile("reduce", 8, 1024) for t in _FEW}},
    "staged": {1: _tile("lanes", 8, 2048, stages=3), **{t: _tile("reduce", 8, 1024, stages=3) for t in _FEW}},
    "w8": {1: _tile("lanes", 16, 2048, warps=8), **{t: _tile("dot", 64, 256, warps=8, stages=4) for t in _FEW}},
    "dot_n16": {t: _tile("dot", 16, 512, stages=3) for t in (1, *_FEW)},
}


def launch_config(config: str | dict | None = None) -> dict[int, dict]:
    """A name from ``CONFIGS``, or the tiles of some token counts over ``"default"``'s; None reads
    ``MII_TRITON_QUANT_GEMV_CONFIG`` (default ``"default"``)."""
    return pick_config(config, CONFIGS, "MII_TRITON_QUANT_GEMV_CONFIG", "quantized GEMV", _over_default)


def _over_default(tiles: dict) -> dict[int, dict]:
    for rows, tile in tiles.items():
        if not isinstance(rows, int) or rows < 1 or rows & (rows - 1):
            raise ValueError(f"quantized GEMV config keys are token counts that are powers of two, not {rows!r}")
        if set(tile) != _TILE_KEYS or tile["mode"] not in _MODES:
            raise ValueError(f"a quantized GEMV tile needs exactly the keys {sorted(_TILE_KEYS)} with mode one "
                             f"of {sorted(_MODES)}; got {tile}")
    return {**CONFIGS["default"], **tiles}


@triton.jit(do_not_specialize=["tokens"])
def _quant_gemv_kernel(x_ptr, w_ptr, scale_ptr, bias_ptr, out_ptr, tokens, features_out, features_in,
                       stride_xt, stride_xk, stride_wn, factor, HAS_BIAS: tl.constexpr, FORMAT: tl.constexpr,
                       BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, MODE: tl.constexpr,
                       NUM_STAGES: tl.constexpr, PRECISION: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    toks = tl.arange(0, BLOCK_T)
    offs_k = tl.arange(0, BLOCK_K)
    # padding rows re-read the last real one, so only K needs a mask on the weight loads
    w_rows = w_ptr + tl.minimum(rows, features_out - 1).to(tl.int64)[:, None] * stride_wn
    x_rows = x_ptr + toks[:, None] * stride_xt
    if MODE == 0 and BLOCK_T == 1:
        acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
    else:
        acc = tl.zeros([BLOCK_T, BLOCK_N], tl.float32)
    for start in tl.range(0, features_in, BLOCK_K, num_stages=NUM_STAGES):
        cols = start + offs_k
        in_k = cols < features_in
        w = load_decoded(w_rows, cols[None, :], in_k[None, :], FORMAT)  # [BLOCK_N, BLOCK_K] float16
        if MODE == 2:
            x = tl.load(x_rows + cols[None, :] * stride_xk, mask=(toks < tokens)[:, None] & in_k[None, :], other=0.0)
            acc = tl.dot(x, tl.trans(w.to(x.dtype)), acc, input_precision=PRECISION)
        elif MODE == 0 and BLOCK_T == 1:
            x = tl.load(x_ptr + cols * stride_xk, mask=in_k, other=0.0)
            acc += w.to(tl.float32) * x.to(tl.float32)[None, :]
        else:
            w = w.to(tl.float32)
            for t in tl.static_range(BLOCK_T):  # one row of x at a time, its sums put in row t
                x = tl.load(x_ptr + tl.minimum(t, tokens - 1) * stride_xt + cols * stride_xk, mask=in_k, other=0.0)
                acc += tl.where(toks[:, None] == t, tl.sum(w * x.to(tl.float32)[None, :], 1)[None, :], 0.0)
    if MODE == 0 and BLOCK_T == 1:
        result = tl.sum(acc, 1)[None, :]
    else:
        result = acc
    in_n = rows < features_out
    result = result * (tl.load(scale_ptr + rows, mask=in_n, other=0.0) * factor)[None, :]
    if HAS_BIAS:
        result += tl.load(bias_ptr + rows, mask=in_n, other=0.0).to(tl.float32)[None, :]
    out = out_ptr + toks[:, None] * features_out + rows[None, :]
    tl.store(out, result.to(out_ptr.dtype.element_ty), mask=(toks < tokens)[:, None] & in_n[None, :])


def gemv_applies(tokens: int, weight: QuantizedWeight) -> bool:
    """A few tokens, FP8 codes and a scale per output row (not per group of columns). FP6 stays on
    quant_linear.py's tl.dot kernel: decoding its 6-bit codes here ran 1.2-5x slower than there on the H200
    (kernel_bench_quant.py, 2026-12-02: 17.4 ms at best against 14.0 for the Llama-3-8B chain at T=1)."""
    return 0 < tokens <= QUANT_GEMV_MAX_TOKENS and weight.group_size is None and weight.mode != "wf6af16"


def quant_gemv(x: torch.Tensor, weight: QuantizedWeight, bias: torch.Tensor | None,
               tiles: dict[int, dict]) -> torch.Tensor:
    """x [..., K] (at most QUANT_GEMV_MAX_TOKENS rows) times the decoded weight [N, K]ᵀ, scaled, + bias."""
    rows = x.reshape(-1, x.shape[-1])
    tokens, (features_out, features_in) = rows.shape[0], weight.shape
    out = torch.empty((tokens, features_out), dtype=x.dtype, device=x.device)
    tile = tile_for(tokens, tiles)
    block_t = triton.next_power_of_2(tokens)
    if tile["mode"] == "dot":
        block_t = max(16, block_t)  # tl.dot needs 16 rows
    fmt = weight_format(weight.mode, x.device)
    _quant_gemv_kernel[(triton.cdiv(features_out, tile["block_n"]),)](
        rows, weight.data.view(torch.uint8), weight.scale, bias if bias is not None else weight.scale, out,
        tokens, features_out, features_in, rows.stride(0), rows.stride(1), weight.data.stride(0),
        DECODED_FACTOR[fmt], HAS_BIAS=bias is not None, FORMAT=fmt, BLOCK_T=block_t, BLOCK_N=tile["block_n"],
        BLOCK_K=tile["block_k"], MODE=_MODES[tile["mode"]], NUM_STAGES=tile["stages"],
        PRECISION="ieee" if x.dtype == torch.float32 else "tf32", num_warps=tile["warps"])
    return out.view(*x.shape[:-1], features_out)
