"""Triton GEMV for the few-token steps of decode (contract: ``linear`` in mii_core/model/ops.py).

At batch 1 a decode step is a chain of matrix-vector products: each reads its whole weight once and
does two FLOPs per weight element, so the only thing that matters is how close the read gets to the
memory bandwidth. ``_gemv_kernel`` gives each program ``BLOCK_N`` output features (weight rows) and walks
their ``K`` columns in chunks of ``BLOCK_K``: the weight tile is loaded once and multiplied by the same
chunk of every token's ``x`` (all ``T <= GEMV_MAX_TOKENS`` rows in one program), so the weights are read
once per step whatever ``T`` is. Products are summed in float32; the bias is added in float32 and the
result rounded once to x's dtype, as cuBLAS and PyTorch's CPU kernels do. Above ``GEMV_MAX_TOKENS`` the
step is a real matrix product and cuBLAS (``torch.nn.functional.linear``) is faster.

How a program multiplies its tile (``mode`` of a tile setting):

* ``"lanes"`` (one token only; more run as ``"reduce"``): float32 partial products per lane
  [BLOCK_N, BLOCK_K], summed across lanes once after the loop, so the loop has no reduction;
* ``"reduce"``: each chunk's products are summed at once, token by token, into [T, BLOCK_N];
* ``"dot"``: ``tl.dot`` on tensor cores with the tokens padded to 16 rows; Triton then pipelines the
  tile loads through shared memory (cp.async) over ``stages`` buffers;
* ``"group"`` (one token; more run as ``"reduce"``): as lanes, but each run of 16 products (one 16-byte load of
  FP8 codes; an FP6 quarter's run of 16 columns) is summed in its thread before it joins the partial sums,
  which are then [BLOCK_N, BLOCK_K / 16] (FP6: [BLOCK_N, BLOCK_K / 64]). The lanes tile's [BLOCK_N, BLOCK_K]
  float32 sums take the registers: the FP8 lanes tile of 8 x 1024 needs 123 a thread (4 programs an SM, 64
  bytes of codes a thread in flight), "group" at 8 x 2048 needs 64 for 128 bytes in flight (sm_90 cubins,
  2026-12-03). A register prefetch of the next chunk ("ahead", since taken out) had needed 170 and ran slower
  on the H200.

FP6 codes (quant_gemv.py) are read as bit planes (mii_core.model.quant_formats): a chunk of ``BLOCK_K`` codes is
three [BLOCK_N, BLOCK_K / 4] byte tiles, decoded as four quarters of codes, each multiplied as above by its own
columns of x (runs of 16); the lanes mode then keeps [BLOCK_N, BLOCK_K / 4] partial sums.

A token axis is never added to the weight tile: a 3-D [T, BLOCK_N, BLOCK_K] product made Triton change
the layout of every weight tile through shared memory (seen in the compiled TTGIR for sm_90).
``stages`` > 1 pipelines the loads of the CUDA-core modes through shared memory too.

Nothing here reads a tensor's values on the host: a decode step that calls it can be captured in a CUDA
graph. The token count is not a specialisation key (a graph ladder would otherwise compile per size);
the tile, and so the compiled kernel, depends only on the token count rounded up to a power of two.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from mii_kernels.triton.activations import activation_id, apply_activation
from mii_kernels.triton.configs import env_switch, pick_config
from mii_kernels.triton.e4m3 import has_nvidia_intrinsics
from mii_kernels.triton.pdl import pdl_launch, pdl_wait
from mii_kernels.triton.quant_decode import (FORMAT_E3M2, FP6_BLOCK, dot_operands, fp6_columns, fp6_plane_tiles,
                                             fp6_quarter, fp6_quarter_asm, fp6_raw_planes, load_decoded,
                                             plane_bytes_of)

GEMV_MAX_TOKENS = 8  # above this many tokens the step is a matrix product: cuBLAS
NORM_FOLD_ENV = "MII_TRITON_NORM_FOLD"
FP6_PTX_ENV = "MII_TRITON_FP6_PTX"
_MODES = {"lanes": 0, "reduce": 1, "dot": 2, "group": 3}
_GROUP = tl.constexpr(16)  # "group" mode: products summed in runs of this many (one 16-byte load of FP8 codes)
_TILE_KEYS = {"mode", "block_n", "block_k", "warps", "stages"}
_FP6 = tl.constexpr(FORMAT_E3M2)


def make_tile(mode: str, block_n: int, block_k: int, warps: int = 4, stages: int = 1) -> dict:
    return dict(mode=mode, block_n=block_n, block_k=block_k, warps=warps, stages=stages)


# Launch settings, chosen by name (env MII_TRITON_LINEAR_CONFIG, read when a kernel set builds its
# TritonLinear, or TritonLinear(config)) so that
# benchmarks/kernel_bench_linear.py can compare them in one run. Each config maps a token count
# (rounded up to a power of two) to its tile.
_FEW = (2, 4, 8)
CONFIGS: dict[str, dict[int, dict]] = {
    # the fastest tile per T on an H100 (benchmarks/kernel_bench_linear.py, 2026-11-25: 5.12 ms for the
    # Llama-3-8B projections at T=1 against cuBLAS's 5.63; about 3% ahead at T=2..8)
    "default": {1: make_tile("lanes", 8, 1024), 2: make_tile("dot", 32, 128, stages=5),
                4: make_tile("dot", 32, 128, stages=5), 8: make_tile("dot", 32, 128, stages=5)},
    "gemv": {1: make_tile("lanes", 16, 512), **{t: make_tile("reduce", 16, 256) for t in _FEW}},
    "gemv_n8": {1: make_tile("lanes", 8, 1024), **{t: make_tile("reduce", 8, 512) for t in _FEW}},
    "gemv_staged": {1: make_tile("lanes", 16, 512, stages=3),
                    **{t: make_tile("reduce", 16, 256, stages=3) for t in _FEW}},
    "gemv_w8": {1: make_tile("lanes", 32, 512, warps=8), **{t: make_tile("reduce", 32, 256, warps=8) for t in _FEW}},
    "reduce": {t: make_tile("reduce", 16, 512) for t in (1, *_FEW)},
    "dot": {t: make_tile("dot", 16, 256, stages=4) for t in (1, *_FEW)},
    "dot_n32": {t: make_tile("dot", 32, 128, stages=5) for t in (1, *_FEW)},
    "dot_k512": {t: make_tile("dot", 16, 512, stages=3) for t in (1, *_FEW)},
    # batch 1 in "group" mode (products summed in runs of 16 in their thread, far fewer partial sums than lanes'):
    # on the H200, 2026-12-03, the chain at T=1 in 3.71 ms (k1024) and 3.85 (k2048) against the default's 3.75:
    # within one run's noise, so the default stays
    "group_k1024": {1: make_tile("group", 8, 1024), **{t: make_tile("dot", 32, 128, stages=5) for t in _FEW}},
    "group_k2048": {1: make_tile("group", 8, 2048), **{t: make_tile("dot", 32, 128, stages=5) for t in _FEW}},
}


def launch_config(config: str | dict | None = None) -> dict[int, dict]:
    """A whole config: a name from ``CONFIGS``, or the tiles of some token counts ({8: {...}}) over
    ``"default"``'s; None reads the name from ``MII_TRITON_LINEAR_CONFIG`` (default ``"default"``)."""
    return pick_config(config, CONFIGS, "MII_TRITON_LINEAR_CONFIG", "linear", _over_default)


def _over_default(tiles: dict) -> dict[int, dict]:
    return tiles_over(tiles, CONFIGS["default"], "linear")


def tiles_over(tiles: dict, default: dict[int, dict], what: str) -> dict[int, dict]:
    """``tiles`` (token count -> tile), each checked, over ``default``'s (a GEMV op's own merge rule)."""
    for rows, tile in tiles.items():
        if not isinstance(rows, int) or rows < 1 or rows & (rows - 1):
            raise ValueError(f"{what} config keys are token counts that are powers of two, not {rows!r}")
        if set(tile) != _TILE_KEYS or tile["mode"] not in _MODES:
            raise ValueError(f"a {what} tile needs exactly the keys {sorted(_TILE_KEYS)} with mode one of "
                             f"{sorted(_MODES)}; got {tile}")
    return {**default, **tiles}


class TritonLinear:
    """The ``linear`` op with its tiles (registered as a class: each kernel set makes one, reading the
    environment then)."""

    def __init__(self, config: str | dict | None = None) -> None:
        self.tiles = launch_config(config)

    def __call__(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return linear(x, weight, bias, self.tiles)


class TritonNormLinear(TritonLinear):
    """The ``rms_norm_linear`` op: the GEMV normalising x as it reads it (the same tiles as ``linear``'s).
    Unless ``MII_TRITON_NORM_FOLD=1`` (read when a kernel set makes it) it declines every call, and the norm
    runs by itself: the fold measured slower on the H200, and stays a candidate to time."""

    def __init__(self, config: str | dict | None = None) -> None:
        super().__init__(config)
        self.folds = folds_norms()

    def __call__(self, x: torch.Tensor, residual: torch.Tensor | None, norm_weight: torch.Tensor, eps: float,
                 weight: torch.Tensor, bias: torch.Tensor | None):
        if not self.folds:
            return NotImplemented
        return rms_norm_linear(x, residual, norm_weight, eps, weight, bias, self.tiles)


def folds_norms() -> bool:
    """``MII_TRITON_NORM_FOLD``: "0" (the default: on the H200 the fold made W2 0.02-0.06 ms a token slower in
    fp8, 0.06-0.09 in bf16, each way timed twice) or "1", a candidate kept for measuring."""
    return env_switch(NORM_FOLD_ENV, "0")


def decodes_fp6_by_ptx() -> bool:
    """``MII_TRITON_FP6_PTX``: "1" (the default: on the H200 it took wf6af16's W2 from 4.94 to 3.64 ms a token)
    or "0", FP6 codes decoded in the GEMV by inline PTX on an NVIDIA GPU (by Triton's integer ops under "0" and
    wherever there is no NVIDIA GPU); read by the op that launches it, when a kernel set makes it."""
    return env_switch(FP6_PTX_ENV, "1")


class TritonGatedLinear(TritonLinear):
    """The ``gated_linear`` op: the GEMV reading [gate | up] (the same tiles as ``linear``'s)."""

    def __call__(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str):
        return gated_linear(x, weight, bias, activation, self.tiles)


@triton.jit
def _load(pointers, in_k, EVEN_K: tl.constexpr):
    if EVEN_K:
        return tl.load(pointers)
    return tl.load(pointers, mask=in_k, other=0.0)


@triton.jit
def _x_values(x_ptr, offsets, in_k, up_offset, res_ptr, norm_w_ptr, norm_cols, rstd, EVEN_K: tl.constexpr,
              GATED: tl.constexpr, ACTIVATION: tl.constexpr, NORM: tl.constexpr, HAS_RESIDUAL: tl.constexpr):
    """x at ``x_ptr + offsets``; GATED: x is [gate | up] and the values are act(gate) · up, rounded as the
    ``gated_activation`` kernel rounds them (the activation to x's dtype, then the product), the up half
    ``up_offset`` elements after the gate's (``gated_linear``). NORM: the values are rms_norm(x [+ residual])
    as the ``rms_norm`` kernel rounds them: the residual at ``res_ptr + offsets``, the norm's weight at
    ``norm_w_ptr + norm_cols``, 1 / rms ``rstd`` (both broadcast to x) (``rms_norm_linear``)."""
    if GATED:
        up = _load(x_ptr + offsets + up_offset, in_k, EVEN_K)
        activated = apply_activation(_load(x_ptr + offsets, in_k, EVEN_K).to(tl.float32), ACTIVATION)
        x = (activated.to(up.dtype).to(tl.float32) * up.to(tl.float32)).to(up.dtype)
    elif NORM:
        x = _load(x_ptr + offsets, in_k, EVEN_K)
        if HAS_RESIDUAL:  # the sum rounded to x's dtype first, as the norm op stores and reads it
            x = (x.to(tl.float32) + _load(res_ptr + offsets, in_k, EVEN_K).to(tl.float32)).to(x.dtype)
        gain = _load(norm_w_ptr + norm_cols, in_k, EVEN_K).to(tl.float32)
        # HF Llama's order: the normalised value cast back, then times the weight, rounded once more
        x = (gain * (x.to(tl.float32) * rstd).to(x.dtype).to(tl.float32)).to(x.dtype)
    else:
        x = _load(x_ptr + offsets, in_k, EVEN_K)
    return x


@triton.jit
def _norm_rstd(x_ptr, res_ptr, sum_ptr, toks, tokens, features_in, stride_xt, stride_xk, eps,
               BLOCK_T: tl.constexpr, CHUNK: tl.constexpr, HAS_RESIDUAL: tl.constexpr):
    """[BLOCK_T] 1 / rms of each token's row, x or x + residual rounded to x's dtype (float32 statistics, as
    the ``rms_norm`` kernel); the first program also stores that sum into ``sum_ptr`` ([tokens, features_in],
    contiguous: the norm's ``summed``, the next layer's residual). Every program reads the whole row anyway."""
    squares = tl.zeros([BLOCK_T], tl.float32)
    row_ok = toks < tokens
    stores = row_ok & ((tl.program_id(0) + toks * 0) == 0)  # the first program's real rows
    for start in range(0, features_in, CHUNK):
        cols = start + tl.arange(0, CHUNK)
        mask = row_ok[:, None] & (cols < features_in)[None, :]
        offsets = toks[:, None] * stride_xt + cols[None, :] * stride_xk
        h = tl.load(x_ptr + offsets, mask=mask, other=0.0)
        if HAS_RESIDUAL:
            h = (h.to(tl.float32) + tl.load(res_ptr + offsets, mask=mask, other=0.0).to(tl.float32)).to(h.dtype)
            tl.store(sum_ptr + toks[:, None] * features_in + cols[None, :], h,
                     mask=stores[:, None] & (cols < features_in)[None, :])
        h32 = h.to(tl.float32)
        squares += tl.sum(h32 * h32, 1)
    return tl.rsqrt(squares / features_in + eps)


@triton.jit
def _fp6_planes(w_rows, positions, mask, plane_bytes, EVEN_K: tl.constexpr, FP6_PTX: tl.constexpr):
    """A chunk's three plane tiles: raw bytes for the PTX decode, else as int32 for ``fp6_quarter``."""
    if FP6_PTX:
        low_pairs, high_pairs, crumbs = fp6_raw_planes(w_rows, positions, mask, plane_bytes, EVEN_K)
    else:
        low_pairs, high_pairs, crumbs = fp6_plane_tiles(w_rows, positions, mask, plane_bytes, EVEN_K)
    return low_pairs, high_pairs, crumbs


@triton.jit
def _fp6_codes(low_pairs, high_pairs, crumbs, QUARTER: tl.constexpr, FP6_PTX: tl.constexpr):
    """Quarter ``QUARTER``'s codes as float16: by inline PTX, four at once (``FP6_PTX``), or by Triton's ops."""
    if FP6_PTX:
        if QUARTER < 2:
            codes = fp6_quarter_asm(low_pairs, crumbs, QUARTER)
        else:
            codes = fp6_quarter_asm(high_pairs, crumbs, QUARTER)
    else:
        codes = fp6_quarter(low_pairs, high_pairs, crumbs, QUARTER)
    return codes


@triton.jit
def _load_tile(w_rows, cols, in_k, EVEN_K: tl.constexpr, FORMAT: tl.constexpr):
    """The [BLOCK_N, BLOCK_K] weight tile: plain values (FORMAT 0), or codes decoded in registers
    (quant_decode.py's formats, for quant_gemv.py)."""
    # one return: Triton compiles every return statement of a function (a constexpr branch's early return
    # too) and refuses two of different dtypes (bf16 values, float16 decoded codes)
    if FORMAT == 0:
        w = _load(w_rows + cols[None, :], in_k[None, :], EVEN_K)
    else:
        w = load_decoded(w_rows, cols[None, :], in_k[None, :], FORMAT)
    return w


@triton.jit
def _accumulate(acc, w, cols, in_k, x_ptr, toks, tokens, stride_xt, stride_xk, up_offset, res_ptr, norm_w_ptr,
                rstd, BLOCK_T: tl.constexpr, MODE: tl.constexpr, EVEN_K: tl.constexpr, PRECISION: tl.constexpr,
                GATED: tl.constexpr, ACTIVATION: tl.constexpr, NORM: tl.constexpr, HAS_RESIDUAL: tl.constexpr):
    """``acc`` plus the products of the weight tile ``w`` [BLOCK_N, width] with columns ``cols`` of every
    token's x (``in_k``: the columns in bounds), by ``MODE``; ``rstd`` [BLOCK_T]: each token's 1 / rms (NORM)."""
    if MODE == 2:  # the padding tokens' rows are masked: zeros, no memory traffic
        norm_cols = cols[None, :] + toks[:, None] * 0
        x = _x_values(x_ptr, toks[:, None] * stride_xt + cols[None, :] * stride_xk,
                      (toks < tokens)[:, None] & in_k[None, :], up_offset, res_ptr, norm_w_ptr, norm_cols,
                      rstd[:, None], False, GATED, ACTIVATION, NORM, HAS_RESIDUAL)
        x, w = dot_operands(x, w)
        acc = tl.dot(x, tl.trans(w), acc, input_precision=PRECISION)
    elif MODE == 0 and BLOCK_T == 1:
        x = _x_values(x_ptr, cols * stride_xk, in_k, up_offset, res_ptr, norm_w_ptr, cols, tl.sum(rstd, 0),
                      EVEN_K, GATED, ACTIVATION, NORM, HAS_RESIDUAL)
        acc += w.to(tl.float32) * x.to(tl.float32)[None, :]
    elif MODE == 3 and BLOCK_T == 1:  # group: each run of _GROUP products summed in its thread, then kept
        x = _x_values(x_ptr, cols * stride_xk, in_k, up_offset, res_ptr, norm_w_ptr, cols, tl.sum(rstd, 0),
                      EVEN_K, GATED, ACTIVATION, NORM, HAS_RESIDUAL)
        products = w.to(tl.float32) * x.to(tl.float32)[None, :]
        acc += tl.sum(tl.reshape(products, (products.shape[0], products.shape[1] // _GROUP, _GROUP)), 2)
    else:
        w = w.to(tl.float32)
        for t in tl.static_range(BLOCK_T):  # one row of x at a time, its sums put in row t
            rstd_t = tl.sum(tl.where(toks == t, rstd, 0.0), 0)
            x = _x_values(x_ptr, tl.minimum(t, tokens - 1) * stride_xt + cols * stride_xk, in_k, up_offset,
                          res_ptr, norm_w_ptr, cols, rstd_t, EVEN_K, GATED, ACTIVATION, NORM, HAS_RESIDUAL)
            acc += tl.where(toks[:, None] == t, tl.sum(w * x.to(tl.float32)[None, :], 1)[None, :], 0.0)
    return acc


@triton.jit(do_not_specialize=["tokens", "eps"])
def _gemv_kernel(x_ptr, w_ptr, scale_ptr, bias_ptr, out_ptr, res_ptr, norm_w_ptr, sum_ptr, tokens, features_out,
                 features_in, stride_xt, stride_xk, stride_wn, factor, plane_bytes, eps, HAS_BIAS: tl.constexpr,
                 BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, MODE: tl.constexpr,
                 EVEN_K: tl.constexpr, NUM_STAGES: tl.constexpr, PRECISION: tl.constexpr, FORMAT: tl.constexpr,
                 GATED: tl.constexpr, ACTIVATION: tl.constexpr, NORM: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
                 NORM_CHUNK: tl.constexpr, FP6_PTX: tl.constexpr, PDL: tl.constexpr):
    pdl_wait(PDL)
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    up_offset = features_in * stride_xk  # GATED: where a row's up half starts, after its gate half
    toks = tl.arange(0, BLOCK_T)
    rstd = tl.full([BLOCK_T], 1.0, tl.float32)
    if NORM:  # a first pass over the row for its statistics (from L2: every program reads the same row)
        rstd = _norm_rstd(x_ptr, res_ptr, sum_ptr, toks, tokens, features_in, stride_xt, stride_xk, eps, BLOCK_T,
                          NORM_CHUNK, HAS_RESIDUAL)
    # padding rows re-read the last real one, so the weight loads need no mask; the store has one
    w_rows = w_ptr + tl.minimum(rows, features_out - 1).to(tl.int64)[:, None] * stride_wn
    if MODE == 0 and BLOCK_T == 1:  # a partial sum per weight of a tile (FP6: of a quarter's tile)
        if FORMAT == _FP6:
            acc = tl.zeros([BLOCK_N, BLOCK_K // 4], tl.float32)
        else:
            acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
    elif MODE == 3 and BLOCK_T == 1:  # a partial sum per run of _GROUP weights (FP6: of a quarter's tile)
        if FORMAT == _FP6:
            acc = tl.zeros([BLOCK_N, BLOCK_K // 4 // _GROUP], tl.float32)
        else:
            acc = tl.zeros([BLOCK_N, BLOCK_K // _GROUP], tl.float32)
    else:
        acc = tl.zeros([BLOCK_T, BLOCK_N], tl.float32)
    # x is loaded 1-D in the CUDA-core modes: as [1, BLOCK_K] it made Triton convert the weight tile's
    # layout (through shared memory) instead of x's
    for start in tl.range(0, features_in, BLOCK_K, num_stages=NUM_STAGES):
        if FORMAT == _FP6:  # BLOCK_K codes: a quarter of their bytes from each plane, four quarters of codes
            positions = start // 4 + tl.arange(0, BLOCK_K // 4)
            low_pairs, high_pairs, crumbs = _fp6_planes(w_rows, positions[None, :], (positions < plane_bytes)[None, :],
                                                        plane_bytes, EVEN_K, FP6_PTX)
            for quarter in tl.static_range(4):
                cols = fp6_columns(positions, quarter)
                acc = _accumulate(acc, _fp6_codes(low_pairs, high_pairs, crumbs, quarter, FP6_PTX), cols,
                                  cols < features_in, x_ptr, toks, tokens, stride_xt, stride_xk, up_offset, res_ptr,
                                  norm_w_ptr, rstd, BLOCK_T, MODE, EVEN_K, PRECISION, GATED, ACTIVATION, NORM,
                                  HAS_RESIDUAL)
        else:
            cols = start + tl.arange(0, BLOCK_K)
            in_k = cols < features_in
            acc = _accumulate(acc, _load_tile(w_rows, cols, in_k, EVEN_K, FORMAT), cols, in_k, x_ptr, toks,
                              tokens, stride_xt, stride_xk, up_offset, res_ptr, norm_w_ptr, rstd, BLOCK_T, MODE,
                              EVEN_K, PRECISION, GATED, ACTIVATION, NORM, HAS_RESIDUAL)
    if (MODE == 0 or MODE == 3) and BLOCK_T == 1:
        result = tl.sum(acc, 1)[None, :]
    else:
        result = acc
    in_n = rows < features_out
    if FORMAT != 0:  # each output column's row scale, times the decoding's power of two
        result = result * (tl.load(scale_ptr + rows, mask=in_n, other=0.0) * factor)[None, :]
    if HAS_BIAS:
        result += tl.load(bias_ptr + rows, mask=in_n, other=0.0).to(tl.float32)[None, :]
    out = out_ptr + toks[:, None] * features_out + rows[None, :]
    tl.store(out, result.to(out_ptr.dtype.element_ty), mask=(toks < tokens)[:, None] & in_n[None, :])


def launch_gemv(x_rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor,
                tile: dict, fmt: int = 0, scale: torch.Tensor | None = None, factor: float = 1.0,
                features_in: int | None = None, activation: str | None = None, norm: NormIn | None = None,
                fp6_ptx: bool = False) -> None:
    """``_gemv_kernel`` over ``x_rows`` [T, K] into ``out`` [T, N]: plain weights (``fmt`` 0), or codes of a
    quant_decode format with their row ``scale`` and decoding ``factor`` (``features_in`` then counts weights,
    not bytes; FP6 chunks of ``block_k`` codes must be whole 64-code blocks of its planes). With
    ``activation``, ``x_rows`` is [T, 2K] holding [gate | up] and the GEMV multiplies act(gate) · up; with
    ``norm`` (:class:`NormIn`, from :func:`norm_input`) it multiplies rms_norm(x [+ residual]). ``fp6_ptx``: FP6
    codes decoded by inline PTX where compiled for an NVIDIA GPU (:func:`decodes_fp6_by_ptx`)."""
    tokens, features_out = out.shape
    features_in = features_in if features_in is not None else weight.shape[1]
    if fmt == FORMAT_E3M2 and tile["block_k"] % FP6_BLOCK:
        raise ValueError(f"an FP6 GEMV tile reads whole blocks of {FP6_BLOCK} codes; block_k {tile['block_k']} "
                         "is not a multiple")
    block_t = triton.next_power_of_2(tokens)
    mode = tile["mode"]
    if mode == "dot":
        block_t = max(16, block_t)  # tl.dot needs 16 rows
    if mode == "group" and block_t > 1:
        mode = "lanes"  # more tokens run as "reduce" (lanes' rule)
    residual = norm.residual if norm is not None and norm.residual is not None else None
    _gemv_kernel[(triton.cdiv(features_out, tile["block_n"]),)](
        x_rows, weight, scale if scale is not None else weight, bias if bias is not None else weight, out,
        residual if residual is not None else x_rows, norm.weight if norm is not None else x_rows,
        norm.summed if residual is not None else x_rows, tokens,
        features_out, features_in, x_rows.stride(0), x_rows.stride(1), weight.stride(0), factor,
        plane_bytes_of(fmt, features_in), norm.eps if norm is not None else 0.0, HAS_BIAS=bias is not None,
        BLOCK_T=block_t, BLOCK_N=tile["block_n"], BLOCK_K=tile["block_k"],
        MODE=_MODES[mode], EVEN_K=features_in % tile["block_k"] == 0, NUM_STAGES=tile["stages"],
        PRECISION="ieee" if x_rows.dtype == torch.float32 else "tf32", FORMAT=fmt, GATED=activation is not None,
        ACTIVATION=activation_id(activation) if activation is not None else 0, NORM=norm is not None,
        HAS_RESIDUAL=residual is not None, NORM_CHUNK=_norm_chunk(block_t, x_rows.shape[1]) if norm is not None else 1,
        # None for other codes: the compile check then makes no PTX variant of their launches
        FP6_PTX=fp6_ptx and has_nvidia_intrinsics(x_rows) if fmt == FORMAT_E3M2 else None,
        num_warps=tile["warps"], **pdl_launch(x_rows))


class NormIn(NamedTuple):
    """The RMSNorm a GEMV applies to x as it reads it (``rms_norm_linear``): ``residual`` ([T, K] as x's
    strides, or None), the norm's ``weight`` [K] and ``eps``, and ``summed`` ([T, K] contiguous), which the
    first program fills with x + residual (the norm's second output), where there is a residual."""
    residual: torch.Tensor | None
    weight: torch.Tensor
    eps: float
    summed: torch.Tensor | None


def norm_input(x: torch.Tensor, residual: torch.Tensor | None, norm_weight: torch.Tensor,
               eps: float) -> tuple[torch.Tensor, NormIn] | None:
    """(x's rows, the :class:`NormIn` for them, its ``summed`` allocated) where the layouts are the GEMV's: the
    residual shaped, strided and typed as x's rows, the weight [K] of x's dtype, contiguous, on x's device;
    else None."""
    rows = x.reshape(-1, x.shape[-1])
    res_rows = residual.reshape(-1, residual.shape[-1]) if residual is not None else None
    if res_rows is not None and (res_rows.shape != rows.shape or res_rows.stride() != rows.stride()
                                 or res_rows.dtype != rows.dtype or res_rows.device != rows.device):
        return None
    if not (norm_weight.shape == rows.shape[1:] and norm_weight.dtype == rows.dtype
            and norm_weight.is_contiguous() and norm_weight.device == rows.device):
        return None
    summed = torch.empty(rows.shape, dtype=x.dtype, device=x.device) if residual is not None else None
    return rows, NormIn(res_rows, norm_weight, eps, summed)


def norm_outputs(out_rows: torch.Tensor, x: torch.Tensor, norm: NormIn) -> tuple[torch.Tensor, torch.Tensor]:
    """A fused norm-and-linear op's result: (the product shaped as x's rows, summed: x + residual, or x)."""
    return out_rows.view(*x.shape[:-1], out_rows.shape[-1]), (norm.summed.view(x.shape) if norm.summed is not None
                                                              else x)


def _norm_chunk(block_t: int, features_in: int) -> int:
    """Columns a program reads at once for the norm's statistics: about 2,048 values of x a pass."""
    return min(triton.next_power_of_2(features_in), max(64, 2048 // block_t))


def gated_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str,
                 tiles: dict[int, dict] = CONFIGS["default"]):
    """``linear(gated_activation(x, activation), weight, bias)`` in one GEMV for a few tokens (x [T, 2K]);
    ``NotImplemented`` where the GEMV does not apply, for the kernel set to compose the two ops."""
    rows = x.reshape(-1, x.shape[-1])
    if x.shape[-1] != 2 * weight.shape[-1] or not _gemv_applies(rows[:, :weight.shape[-1]], weight, bias):
        return NotImplemented
    out = torch.empty((rows.shape[0], weight.shape[0]), dtype=x.dtype, device=x.device)
    launch_gemv(rows, weight, bias, out, tile_for(rows.shape[0], tiles), activation=activation)
    return out.view(*x.shape[:-1], weight.shape[0])


def rms_norm_linear(x: torch.Tensor, residual: torch.Tensor | None, norm_weight: torch.Tensor, eps: float,
                    weight: torch.Tensor, bias: torch.Tensor | None, tiles: dict[int, dict] = CONFIGS["default"]):
    """``linear(rms_norm(x, norm_weight, eps, residual), weight, bias)`` in one GEMV for a few tokens: (out,
    summed), summed = x + residual (x where there is none); ``NotImplemented`` where the GEMV does not apply."""
    prepared = norm_input(x, residual, norm_weight, eps)
    if prepared is None or not _gemv_applies(prepared[0], weight, bias):
        return NotImplemented
    rows, norm = prepared
    out = torch.empty((rows.shape[0], weight.shape[0]), dtype=x.dtype, device=x.device)
    launch_gemv(rows, weight, bias, out, tile_for(rows.shape[0], tiles), norm=norm)
    return norm_outputs(out, x, norm)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           tiles: dict[int, dict] = CONFIGS["default"]) -> torch.Tensor:
    rows = x.reshape(-1, x.shape[-1])  # a view for 2-D input, strided rows included
    if not _gemv_applies(rows, weight, bias):
        return torch.nn.functional.linear(x, weight, bias)
    out = torch.empty((rows.shape[0], weight.shape[0]), dtype=x.dtype, device=x.device)
    launch_gemv(rows, weight, bias, out, tile_for(rows.shape[0], tiles))
    return out.view(*x.shape[:-1], weight.shape[0])


def tile_for(tokens: int, tiles: dict[int, dict] = CONFIGS["default"]) -> dict:
    """The tile of ``tiles`` for ``tokens`` rows: the entry of the smallest power of two >= tokens, else the
    largest entry."""
    padded = triton.next_power_of_2(tokens)
    fitting = [rows for rows in tiles if rows >= padded]
    return tiles[min(fitting) if fitting else max(tiles)]


def _gemv_applies(rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """A few tokens and the layout the kernel reads; anything else (including shapes or dtypes that do not
    match) goes to torch, which computes it or raises its own error."""
    if not 0 < rows.shape[0] <= GEMV_MAX_TOKENS or weight.dim() != 2 or not weight.is_contiguous():
        return False
    if rows.shape[1] != weight.shape[1] or 0 in weight.shape or weight.dtype != rows.dtype:
        return False
    if rows.device != weight.device:
        return False
    return bias is None or (bias.shape == weight.shape[:1] and bias.dtype == rows.dtype
                            and bias.is_contiguous() and bias.device == rows.device)
