"""Triton paged attention over the blocked KV cache for a ragged batch (contract: mii_core/model/ops.py).

Two kernels share one inner loop (``_attend``, online softmax in float32 over key tiles gathered through
the block table, so a tile needs no alignment with the cache's blocks):

* ``_prefill_kernel`` serves every sequence with several new tokens. Its grid is flat over
  (query tile, KV head): sequence s owns the tiles from ``query_start[s] // BLOCK_Q + s``, an upper
  bound of the tiles before it, so the grid (``T // BLOCK_Q + S`` tiles) needs no host-side count and
  each program finds its sequence by a binary search over ``query_start``.
* ``_decode_kernel`` serves every single-token sequence (``batch.decode_seqs``) with a grid of
  (decode, KV head, split). A long context is split into ``num_splits`` key ranges (flash-decoding) whose
  partial results ``_reduce_kernel`` merges; the split count depends only on shapes (sequence count and
  block-table width), so a decode step can be captured in a CUDA graph.

A program loads each K/V tile once per KV head for all the query heads that share it (GQA/MQA): its rows
are (query token, head of the group) pairs, the group padded to a power of two and masked. Beyond 256
padded features a head (multi-head latent attention: 576-feature keys, padded to 1024, over one KV head
shared by every query head) caps a program's rows at ``group_rows_huge_d`` query heads, so a big group is
split over several programs, each reading the keys again: correct, but a large MQA group then reads the
cache ``group / group_rows_huge_d`` times. A key over 256 features that is no power of two is two products,
its first power of two and the rest (576 = 512 + 64), rather than one padded to 1024.

Values may be narrower or wider than keys (``DV``): a value tile is loaded with its own feature range, and
``v_cache`` may be a view of ``k_cache``'s first DV features (the same bytes, read through its strides).
Keys outside ``[window start of the first row, context)`` are never loaded: blocks that left the window
may belong to other sequences by now.

An FP8 cache (``params.kv_scales`` set) is read through its bytes (the interpreter has no float8
tensors), each tile converted in registers; a KV head's K scale joins the score scale and its V scale
multiplies the output once, rather than every element of every tile. With 16-bit queries the products run
in float16 (``FP8_F16_DOTS``): sm_90 turns two e4m3 codes into two float16 in one instruction, but into
bfloat16 only through a second, per-element float16 → bfloat16 conversion, and those conversions, not the
bytes, bounded the decode kernel (SASS of sm_90: 256 ``F2F.BF16.F16`` per 64-key tile; on the H200 an FP8
cache's W1 decode attention took as long as bf16's for half the bytes). Every e4m3 value is exact in
float16; the queries are multiplied by the score scale first (in float32, then rounded to float16 and
saturated at its ±65504) and the probabilities are float16 too (finer than bfloat16 on [2^-14, 1]).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from mii_core.kv_cache import values_along_slots
from mii_core.model.ops import AttentionParams
from mii_kernels.triton.amax import join_max
from mii_kernels.triton.configs import pick_config
from mii_kernels.triton.fp8_kv import check_fp8_cache
from mii_kernels.triton.hardware import saturated_f16
from mii_kernels.triton.pdl import pdl_launch, pdl_wait

LOG2_E = 1.4426950408889634
LOG2_E_JIT = tl.constexpr(LOG2_E)  # a compiled kernel reads only constexpr globals (the interpreter reads any)
NEG_BIG = tl.constexpr(-1.0e30)  # running max starts finite so a fully masked row never computes inf - inf
SLOTS_IN_RUNS = 2  # V_SLOT_MAJOR of a slot-major value cache whose slots load as 16-byte vectors
SLOTS_IN_RUNS_JIT = tl.constexpr(SLOTS_IN_RUNS)
MAX_HEAD_SIZE = 1024  # a key or value head of up to this many features (padded to a power of two)

# Launch settings, chosen by name (env MII_TRITON_ATTENTION_CONFIG, read when a kernel set builds its
# TritonAttention, or TritonAttention(config)) so a benchmark can compare them in one run. "*_large_d" applies
# when the padded head size exceeds 128, "*_huge_d" when it exceeds 256 (multi-head latent attention's
# 576-feature keys, padded to 1024); "group_rows_huge_d" then caps the query heads a program takes at once.
_DEFAULT = dict(prefill_block_m=128, prefill_block_n=64, prefill_warps=8, prefill_stages=3,
                prefill_block_m_large_d=64, prefill_block_n_large_d=32,
                prefill_block_m_huge_d=16, prefill_block_n_huge_d=16, decode_block_n_huge_d=16,
                group_rows_huge_d=16,
                decode_block_n=64, decode_warps=4, decode_stages=3, decode_block_n_large_d=32,
                decode_splits=None, decode_min_keys_per_split=512, decode_target_waves=2,
                decode_max_splits=64, decode_fp8_block_n_scale=2, decode_fp8_stages=4, decode_merge_in_kernel=False,
                fp8_values_along_slots=True)
CONFIGS: dict[str, dict] = {
    "default": _DEFAULT,
    "small_tiles": {**_DEFAULT, **dict(prefill_block_m=64, prefill_warps=4, decode_block_n=32, decode_stages=4,
                                       decode_min_keys_per_split=256, decode_target_waves=4)},
    "long_kv": {**_DEFAULT, **dict(prefill_block_n=32, prefill_stages=4, decode_block_n=128, decode_warps=8,
                                   decode_block_n_large_d=64, decode_min_keys_per_split=1024, decode_max_splits=32)},
    # the default's key tiles on an FP8 cache are twice as long as on bf16 (decode_fp8_block_n_scale 2: a tile
    # of e4m3 keys then moves as many bytes as a bf16 one); this is the FP8 cache with bf16's tile length. On
    # the H200 (kernel_bench_attention.py, W1's decode step per layer) the long tiles took 250.5 against 265.5
    # µs, then 235.8 against 268.4 in a second session; W2's steps as fast or faster (7.5 against 9.3 µs)
    "fp8_narrow": {**_DEFAULT, **dict(decode_fp8_block_n_scale=1)},
    # candidates for the FP8 decode's shared-memory stall (Nsight, tenth session: short_scoreboard first at
    # 2.4 TB/s): twice the warps to hide it, or one more stage of tiles in flight. On the H200 (W1's decode
    # step per layer, kernel_bench_attention.py, 2026-12-03) eight warps were slower (295 against 241 µs) and
    # four stages faster in four runs, both value layouts (slots 191 against 200 µs, features 235 against 242):
    # the FP8 cache's default since (decode_fp8_stages); "fp8_stages3" keeps the three stages of bf16's
    "fp8_w8": {**_DEFAULT, **dict(decode_warps=8)},
    "fp8_stages3": {**_DEFAULT, **dict(decode_fp8_stages=3)},
    # a split decode's splits merged by the last of them to finish instead of by the reduce kernel (no launch,
    # no launch gap). Slower on the H200: W2's attention (a decode of 192 keys, 32 layers) took 0.364 ms
    # against 0.169 + 0.092 with the reduce kernel (profile_steps.py, 2026-12-03, bf16 cache); kept to measure
    "merge_in_kernel": {**_DEFAULT, **dict(decode_merge_in_kernel=True)},
    # the default asks the engine to store an FP8 cache's values along each block's slots (this op then
    # declares reads_slot_major_values): a V tile reaches the product through shared memory once, not twice
    # (42 KB a program against 75 on sm_90). On the H200 W1's decode step per layer took 200 against 242 µs
    # along the features, and W1 with fp8 weights 13,684 against 11,651 output tok/s, in one run
    # (2026-12-03, once the slots loaded as vectors: SLOTS_IN_RUNS). This is the features layout, to measure
    "fp8_values_along_features": {**_DEFAULT, **dict(fp8_values_along_slots=False)},
}


def launch_config(config: str | dict | None = None) -> dict:
    """A whole launch config: a name from ``CONFIGS``, or some keys overriding ``"default"``'s; None reads
    the name from ``MII_TRITON_ATTENTION_CONFIG`` (default ``"default"``)."""
    return pick_config(config, CONFIGS, "MII_TRITON_ATTENTION_CONFIG", "attention", _over_default)


def _over_default(config: dict) -> dict:
    unknown = set(config) - set(CONFIGS["default"])
    if unknown:
        raise ValueError(f"unknown attention config keys {sorted(unknown)}; valid: {sorted(CONFIGS['default'])}")
    return {**CONFIGS["default"], **config}


class TritonAttention:
    """The ``paged_attention`` op with its launch config (registered as a class: each kernel set makes one,
    reading the environment then)."""

    supports_fp8_kv_cache = True
    joins_amax = True  # the output's largest |value|, for the o projection's FP8 scale (ops.py)

    def __init__(self, config: str | dict | None = None) -> None:
        self.config = launch_config(config)
        # reads a value cache stored along its slots (slot_major_values) or its features whatever the config;
        # asks the engine for the slots where the config says so (the default: faster on the H200, above)
        self.reads_slot_major_values = self.config["fp8_values_along_slots"]
        self._arrivals: dict[torch.device, torch.Tensor] = {}

    def __call__(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, batch,
                 params: AttentionParams, amax: torch.Tensor | None = None) -> torch.Tensor:
        return paged_attention(q, k_cache, v_cache, batch, params, self.config, self._arrivals_on(q.device), amax)

    def _arrivals_on(self, device: torch.device) -> torch.Tensor | None:
        """This op's split-arrival counters on ``device`` (zeros; each launch leaves them zero) where its
        config merges split decodes in-kernel, made on first use outside a CUDA-graph capture (the engine's
        warm-up runs eager steps first); None otherwise, and the reduce kernel merges the splits."""
        if not self.config["decode_merge_in_kernel"]:
            return None
        if device not in self._arrivals:
            if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
                return None
            self._arrivals[device] = torch.zeros(_ARRIVAL_SLOTS, dtype=torch.int32, device=device)
        return self._arrivals[device]

    def decode_splits(self, num_decodes: int, kv_heads: int, max_keys: int, window: int | None,
                      device: torch.device) -> int:
        return decode_splits(num_decodes, kv_heads, max_keys, window, device, self.config)


@triton.jit
def _tanh(x):
    """tanh from one exp of a non-positive argument (no overflow; libdevice is not in the interpreter)."""
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def _attend(acc, m_i, l_i, q, q_tail, q_pos, slope, k_cache, v_cache, table_row, key_lo, key_hi, kv_head,
            stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh, stride_vd, qk_scale, v_mult, cap,
            window,
            BLOCK_N: tl.constexpr, BLOCK_SIZE: tl.constexpr, D: tl.constexpr, D_PAD: tl.constexpr,
            D_TAIL_PAD: tl.constexpr, DV: tl.constexpr, DV_PAD: tl.constexpr, MASKED: tl.constexpr,
            USE_WINDOW: tl.constexpr, USE_ALIBI: tl.constexpr, USE_SOFTCAP: tl.constexpr,
            NUM_STAGES: tl.constexpr, PRECISION: tl.constexpr, FP8_KV: tl.constexpr, V_SLOT_MAJOR: tl.constexpr):
    """Online softmax of rows ``q`` [M, D_PAD] at positions ``q_pos`` over keys [key_lo, key_hi), values of
    ``DV`` features (``acc`` [M, DV_PAD]). With ``D_TAIL_PAD`` (a huge key that is no power of two: 576 =
    512 + 64) the key's first ``D_PAD`` features and the rest (``q_tail`` [M, D_TAIL_PAD]) are two products
    summed, rather than one over a key padded to 1024.

    ``acc``, ``m_i``, ``l_i`` (unnormalised output, running max and sum, log2 domain) go in and come out
    updated. Without ``MASKED`` the range must hold whole tiles every row sees: no mask is computed.
    Scores are in the log2 domain: ``qk_scale`` is scale · log2(e), or scale / cap with ``USE_SOFTCAP``
    (then ``cap`` is cap · log2(e)); ``slope`` [M] is each row's ALiBi slope · log2(e).
    """
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D_PAD)
    offs_dv = tl.arange(0, DV_PAD)
    for start in tl.range(key_lo, key_hi, BLOCK_N, num_stages=NUM_STAGES):
        keys = start + offs_n
        key_ok = keys < key_hi
        if MASKED:
            block = tl.load(table_row + keys // BLOCK_SIZE, mask=key_ok, other=0)
        else:
            block = tl.load(table_row + keys // BLOCK_SIZE)
        # masked keys and padded features read as 0, never as whatever (NaN) a foreign block holds
        kv_mask = (key_ok if MASKED else keys >= 0)[:, None] & (offs_d[None, :] < D)
        row = block[:, None] * stride_kb + (keys % BLOCK_SIZE)[:, None] * stride_kt + kv_head * stride_kh
        if MASKED or D < D_PAD:
            k = tl.load(k_cache + row + offs_d[None, :], mask=kv_mask, other=0.0)
        else:
            k = tl.load(k_cache + row + offs_d[None, :])
        if FP8_KV:  # e4m3 bytes: exact in q's dtype; the K scale is in qk_scale
            k = k.to(tl.float8e4nv, bitcast=True).to(q.dtype)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION)
        if D_TAIL_PAD > 0:
            offs_t = D_PAD + tl.arange(0, D_TAIL_PAD)
            k_tail = tl.load(k_cache + row + offs_t[None, :], other=0.0,
                             mask=(key_ok if MASKED else keys >= 0)[:, None] & (offs_t[None, :] < D))
            if FP8_KV:
                k_tail = k_tail.to(tl.float8e4nv, bitcast=True).to(q.dtype)
            s += tl.dot(q_tail, tl.trans(k_tail), input_precision=PRECISION)
        s = s * qk_scale
        if USE_SOFTCAP:
            s = _tanh(s) * cap
        if USE_ALIBI:
            s += slope[:, None] * (keys[None, :] - q_pos[:, None]).to(tl.float32)
        if MASKED:
            visible = key_ok[None, :] & (keys[None, :] <= q_pos[:, None])
            if USE_WINDOW:
                visible = visible & (q_pos[:, None] - keys[None, :] < window)
            s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        if V_SLOT_MAJOR:
            v = _load_values_along_slots(v_cache, block, keys, key_ok, kv_head, offs_dv, stride_vb, stride_vt,
                                         stride_vh, stride_vd, q, BLOCK_N, BLOCK_SIZE, DV, DV_PAD, MASKED,
                                         V_SLOT_MAJOR == SLOTS_IN_RUNS_JIT and not USE_WINDOW)
        else:
            row = block[:, None] * stride_vb + (keys % BLOCK_SIZE)[:, None] * stride_vt + kv_head * stride_vh
            if MASKED or DV < DV_PAD:
                v_mask = (key_ok if MASKED else keys >= 0)[:, None] & (offs_dv[None, :] < DV)
                v = tl.load(v_cache + row + offs_dv[None, :] * stride_vd, mask=v_mask, other=0.0)
            else:
                v = tl.load(v_cache + row + offs_dv[None, :] * stride_vd)
            if FP8_KV:  # times ``v_mult``: see _fp8_operands
                v = v.to(tl.float8e4nv, bitcast=True).to(q.dtype) * v_mult
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new
    return acc, m_i, l_i


@triton.jit
def _load_values_along_slots(v_cache, block, keys, key_ok, kv_head, offs_dv, stride_vb, stride_vt, stride_vh,
                             stride_vd, q, BLOCK_N: tl.constexpr, BLOCK_SIZE: tl.constexpr, DV: tl.constexpr,
                             DV_PAD: tl.constexpr, MASKED: tl.constexpr, IN_RUNS: tl.constexpr):
    """A tile of an FP8 cache's values stored along each block's slots, [keys, features] in q's dtype: loaded
    as its transpose (a feature's keys adjacent bytes), converted, then transposed back, so that it reaches
    the product as a key tile does, through shared memory once (sm_90: no float16 copy of it written back).
    Its scale is applied at the output (_fp8_operands). ``IN_RUNS``: the cache's slots lie in aligned runs of 16
    bytes (``SLOTS_IN_RUNS``) and every tile starts on a multiple of 16 keys (no sliding window moves the first)."""
    row = block[None, :] * stride_vb + (keys % BLOCK_SIZE)[None, :] * stride_vt + kv_head * stride_vh
    # no load mask: every address is valid (a masked key's block reads as block 0, a padded feature as the
    # last), and what must read as 0 is selected after. A masked byte-wise load cost 105 registers a thread.
    features = tl.minimum(offs_dv, DV - 1) if DV < DV_PAD else offs_dv
    offsets = row + features[:, None] * stride_vd
    if IN_RUNS and BLOCK_N % 16 == 0:
        # a tile's keys are then runs of 16 adjacent bytes (one vector) starting on a multiple of 16; Triton cannot
        # see that through the block table, and untold it loaded an edge tile a byte at a time (128 LDG.E.U8 in
        # sm_90's SASS; 2.2x slower at W1 on the H200)
        offsets = tl.max_contiguous(tl.multiple_of(offsets, [1, 16]), [1, 16])
    vt = tl.load(v_cache + offsets)
    if MASKED or DV < DV_PAD:
        vt = tl.where((key_ok if MASKED else keys >= 0)[None, :] & (offs_dv[:, None] < DV), vt, 0)
    return tl.trans(vt.to(tl.float8e4nv, bitcast=True).to(q.dtype))


@triton.jit
def _attend_range(q, q_tail, q_pos, slope, k_cache, v_cache, table_row, key_lo, full_lo, full_hi, key_hi,
                  kv_head, stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh, stride_vd, qk_scale,
                  v_mult, cap,
                  window, M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_SIZE: tl.constexpr, D: tl.constexpr,
                  D_PAD: tl.constexpr, D_TAIL_PAD: tl.constexpr, DV: tl.constexpr, DV_PAD: tl.constexpr,
                  USE_WINDOW: tl.constexpr, USE_ALIBI: tl.constexpr, USE_SOFTCAP: tl.constexpr,
                  NUM_STAGES: tl.constexpr, PRECISION: tl.constexpr, FP8_KV: tl.constexpr,
                  V_SLOT_MAJOR: tl.constexpr):
    """Keys [key_lo, key_hi), of which every row sees [full_lo, full_hi): whole tiles of that part run
    without masks, the edges (window start, causal diagonal, context end) with them. Returns (acc, m, l)."""
    m_i = tl.full([M], NEG_BIG, tl.float32)
    l_i = tl.zeros([M], tl.float32)
    acc = tl.zeros([M, DV_PAD], tl.float32)
    full_hi = full_lo + tl.maximum(full_hi - full_lo, 0) // BLOCK_N * BLOCK_N
    acc, m_i, l_i = _attend(acc, m_i, l_i, q, q_tail, q_pos, slope, k_cache, v_cache, table_row, key_lo, full_lo,
                            kv_head, stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh, stride_vd,
                            qk_scale, v_mult,
                            cap, window, BLOCK_N, BLOCK_SIZE, D, D_PAD, D_TAIL_PAD, DV, DV_PAD, True, USE_WINDOW,
                            USE_ALIBI, USE_SOFTCAP, 1, PRECISION, FP8_KV, V_SLOT_MAJOR)
    acc, m_i, l_i = _attend(acc, m_i, l_i, q, q_tail, q_pos, slope, k_cache, v_cache, table_row, full_lo, full_hi,
                            kv_head, stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh, stride_vd,
                            qk_scale, v_mult,
                            cap, window, BLOCK_N, BLOCK_SIZE, D, D_PAD, D_TAIL_PAD, DV, DV_PAD, False, USE_WINDOW,
                            USE_ALIBI, USE_SOFTCAP, NUM_STAGES, PRECISION, FP8_KV, V_SLOT_MAJOR)
    return _attend(acc, m_i, l_i, q, q_tail, q_pos, slope, k_cache, v_cache, table_row, full_hi, key_hi,
                   kv_head, stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh, stride_vd, qk_scale,
                   v_mult,
                   cap, window, BLOCK_N, BLOCK_SIZE, D, D_PAD, D_TAIL_PAD, DV, DV_PAD, True, USE_WINDOW,
                   USE_ALIBI, USE_SOFTCAP, 1, PRECISION, FP8_KV, V_SLOT_MAJOR)


@triton.jit
def _load_tail(q_rows, row_ok, D: tl.constexpr, D_PAD: tl.constexpr, D_TAIL_PAD: tl.constexpr, placeholder):
    """The query features past the first ``D_PAD`` ([M, D_TAIL_PAD], from row pointers ``q_rows`` [M, 1]), or
    ``placeholder`` (never read) when the key has no tail."""
    # if/else, each returning: Triton compiles every return of a function (a constexpr branch's early one
    # too) and refuses returns of different shapes
    if D_TAIL_PAD > 0:
        offs_t = D_PAD + tl.arange(0, D_TAIL_PAD)
        return tl.load(q_rows + offs_t[None, :], mask=row_ok[:, None] & (offs_t[None, :] < D), other=0.0)
    else:
        return placeholder


@triton.jit
def _first_key(q_pos, window, USE_WINDOW: tl.constexpr):
    if USE_WINDOW:
        return tl.maximum(q_pos - window + 1, 0)
    return q_pos * 0


@triton.jit
def _row_slopes(alibi_slopes, head, row_ok, USE_ALIBI: tl.constexpr):
    """Each row's ALiBi slope in the log2 domain (0 for padding rows, and without ALiBi)."""
    if USE_ALIBI:
        return tl.load(alibi_slopes + head, mask=row_ok, other=0.0) * LOG2_E_JIT
    return tl.zeros(head.shape, tl.float32)


@triton.jit
def _kv_head_scales(kv_scales, kv_heads, kv_head, FP8_KV: tl.constexpr):
    """This KV head's (K scale, V scale): ``kv_scales`` [2, kv_heads] with an FP8 cache, else (1, 1)."""
    if FP8_KV:
        return tl.load(kv_scales + kv_head), tl.load(kv_scales + kv_heads + kv_head)
    return 1.0, 1.0


@triton.jit
def _f16_scaled(tile, score_scale):
    """A query tile times the score scale, in float32, then as float16 saturated at its largest finite value
    (the FP8 cache's float16 products: see the module's docstring)."""
    return saturated_f16(tile.to(tl.float32) * score_scale)


@triton.jit
def _fp8_operands(q_tile, q_tail, qk_scale, k_scale, v_scale, FP8_F16_DOTS: tl.constexpr,
                  V_SLOT_MAJOR: tl.constexpr):
    """(query tile, query tail, score scale, factor of every V tile, factor of the output) for this KV head.
    With float16 products the score scale goes into the queries, and the V scale (as float16) into each V
    tile, its rounding made good at the output. Multiplying the V tile is also what keeps Triton from moving
    its layout change for the product before the e4m3 → float16 conversion: the tile then went through shared
    memory as bytes, read back one byte per load (128 ``LDS.U8`` a 64-key tile in sm_90's SASS) instead of
    as float16 by ``ldmatrix``. A slot-major V (``V_SLOT_MAJOR``) needs no such push: its tile's bytes lie
    as the product wants them, as a key tile's do, so it is converted in registers, unscaled (exact in
    float16), and the whole V scale is applied at the output."""
    score_scale = qk_scale * k_scale
    v_mult = 1.0
    out_scale = v_scale
    if FP8_F16_DOTS:
        q_tile = _f16_scaled(q_tile, score_scale)
        q_tail = _f16_scaled(q_tail, score_scale)
        score_scale = 1.0
        if not V_SLOT_MAJOR:
            v_mult = v_scale.to(tl.float16)
            out_scale = v_scale / v_mult.to(tl.float32)
    return q_tile, q_tail, score_scale, v_mult, out_scale


@triton.jit
def _group_heads(rows, G: tl.constexpr, G_PAD: tl.constexpr):
    """(KV head, query head, row holds a head) of ``rows``: axis 1 of the grid runs over (KV head, chunk of
    ``G_PAD`` of its ``G`` query heads); one chunk unless a huge head size caps the rows a program holds."""
    chunks = (G + G_PAD - 1) // G_PAD
    kv_head = tl.program_id(1) // chunks
    in_group = (tl.program_id(1) % chunks) * G_PAD + rows % G_PAD
    return kv_head, kv_head * G + in_group, in_group < G


@triton.jit
def _find_sequence(query_start, num_seqs, tile, BLOCK_Q: tl.constexpr):
    """The last sequence s whose first tile ``query_start[s] // BLOCK_Q + s`` is <= ``tile``."""
    lo = 0
    hi = num_seqs
    while lo < hi:
        mid = (lo + hi) // 2
        first_tile = tl.load(query_start + mid).to(tl.int32) // BLOCK_Q + mid
        if first_tile <= tile:
            lo = mid + 1
        else:
            hi = mid
    return lo - 1


@triton.jit
def _store_output(out, offsets, result, mask, amax, JOIN_AMAX: tl.constexpr):
    """``result`` [rows, DV_PAD] float32 stored in out's dtype; with JOIN_AMAX its largest |value| as stored
    joined into ``amax`` (the o projection's FP8 scale; one conditional atomic a program)."""
    stored = result.to(out.dtype.element_ty)
    tl.store(out + offsets, stored, mask=mask)
    if JOIN_AMAX:
        join_max(amax, tl.max(tl.max(tl.where(mask, tl.abs(stored.to(tl.float32)), 0.0), axis=1), axis=0))


# ints that change from step to step are not specialised on (== 1, % 16): that would compile new
# variants in the middle of a run
@triton.jit(do_not_specialize=['num_seqs', 'stride_bt', 'window'])
def _prefill_kernel(out, amax, q, k_cache, v_cache, block_tables, query_start, context_lens, alibi_slopes, kv_scales,
                    num_seqs, kv_heads,
                    stride_ot, stride_oh, stride_qt, stride_qh, stride_bt,
                    stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh, stride_vd, qk_scale, cap, window,
                    G: tl.constexpr, G_PAD: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr,
                    BLOCK_SIZE: tl.constexpr, D: tl.constexpr, D_PAD: tl.constexpr, D_TAIL_PAD: tl.constexpr,
                    DV: tl.constexpr, DV_PAD: tl.constexpr, USE_WINDOW: tl.constexpr, USE_ALIBI: tl.constexpr,
                    USE_SOFTCAP: tl.constexpr, SKIP_DECODES: tl.constexpr, NUM_STAGES: tl.constexpr,
                    PRECISION: tl.constexpr, FP8_KV: tl.constexpr, FP8_F16_DOTS: tl.constexpr,
                    V_SLOT_MAJOR: tl.constexpr, JOIN_AMAX: tl.constexpr, PDL: tl.constexpr):
    pdl_wait(PDL)
    tile = tl.program_id(0)
    seq = _find_sequence(query_start, num_seqs, tile, BLOCK_Q)
    q_start = tl.load(query_start + seq)
    q_len = (tl.load(query_start + seq + 1) - q_start).to(tl.int32)
    local = tile - (q_start.to(tl.int32) // BLOCK_Q + seq)
    if local * BLOCK_Q >= q_len:
        return
    if SKIP_DECODES and q_len == 1:
        return  # served by the decode kernel
    context = tl.load(context_lens + seq).to(tl.int32)
    rows = tl.arange(0, BLOCK_Q * G_PAD)
    token = local * BLOCK_Q + rows // G_PAD
    kv_head, head, in_group = _group_heads(rows, G, G_PAD)
    row_ok = (token < q_len) & in_group
    q_pos = tl.where(row_ok, context - q_len + token, -1)
    slope = _row_slopes(alibi_slopes, head, row_ok, USE_ALIBI)
    offs_d = tl.arange(0, D_PAD)
    q_row = q + (q_start + token).to(tl.int64)[:, None] * stride_qt + head[:, None] * stride_qh
    io_mask = row_ok[:, None] & (offs_d[None, :] < D)
    q_tile = tl.load(q_row + offs_d[None, :], mask=io_mask, other=0.0)
    q_tail = _load_tail(q_row, row_ok, D, D_PAD, D_TAIL_PAD, q_tile)
    first_pos = context - q_len + local * BLOCK_Q
    last_pos = tl.minimum(first_pos + BLOCK_Q, context) - 1
    table_row = block_tables + seq.to(tl.int64) * stride_bt
    k_scale, v_scale = _kv_head_scales(kv_scales, kv_heads, kv_head, FP8_KV)
    q_tile, q_tail, score_scale, v_mult, out_scale = _fp8_operands(q_tile, q_tail, qk_scale, k_scale, v_scale,
                                                                   FP8_F16_DOTS, V_SLOT_MAJOR)
    acc, m_i, l_i = _attend_range(q_tile, q_tail, q_pos, slope, k_cache, v_cache, table_row,
                                  _first_key(first_pos, window, USE_WINDOW), _first_key(last_pos, window, USE_WINDOW),
                                  first_pos + 1, last_pos + 1, kv_head,
                                  stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh, stride_vd,
                                  score_scale,
                                  v_mult, cap, window, BLOCK_Q * G_PAD, BLOCK_N, BLOCK_SIZE, D, D_PAD, D_TAIL_PAD, DV,
                                  DV_PAD, USE_WINDOW, USE_ALIBI, USE_SOFTCAP, NUM_STAGES, PRECISION, FP8_KV,
                                  V_SLOT_MAJOR)
    l_i = tl.where(l_i == 0.0, 1.0, l_i)
    offs_dv = tl.arange(0, DV_PAD)
    o_off = (q_start + token).to(tl.int64)[:, None] * stride_ot + head[:, None] * stride_oh + offs_dv[None, :]
    _store_output(out, o_off, acc / l_i[:, None] * out_scale, row_ok[:, None] & (offs_dv[None, :] < DV), amax,
                  JOIN_AMAX)


@triton.jit(do_not_specialize=['num_splits', 'stride_bt', 'window'])
def _decode_kernel(out, amax, part_out, part_lse, q, k_cache, v_cache, block_tables, query_start, context_lens,
                   alibi_slopes, kv_scales, decode_seqs, arrivals, num_splits, num_q_heads, kv_heads,
                   stride_ot, stride_oh, stride_qt, stride_qh, stride_bt,
                   stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh, stride_vd, qk_scale, cap, window,
                   G: tl.constexpr, G_PAD: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_SIZE: tl.constexpr,
                   D: tl.constexpr, D_PAD: tl.constexpr, D_TAIL_PAD: tl.constexpr, DV: tl.constexpr,
                   DV_PAD: tl.constexpr, USE_WINDOW: tl.constexpr, USE_ALIBI: tl.constexpr, USE_SOFTCAP: tl.constexpr,
                   SPLIT: tl.constexpr, MERGE: tl.constexpr, NUM_STAGES: tl.constexpr, PRECISION: tl.constexpr,
                   FP8_KV: tl.constexpr, FP8_F16_DOTS: tl.constexpr, V_SLOT_MAJOR: tl.constexpr,
                   JOIN_AMAX: tl.constexpr, PDL: tl.constexpr):
    pdl_wait(PDL)
    index = tl.program_id(0)
    split = tl.program_id(2)
    seq = tl.load(decode_seqs + index)
    token = tl.load(query_start + seq)
    context = tl.load(context_lens + seq).to(tl.int32)
    rows = tl.arange(0, G_PAD)
    kv_head, head, row_ok = _group_heads(rows, G, G_PAD)
    q_pos = tl.where(row_ok, context - 1, -1)
    slope = _row_slopes(alibi_slopes, head, row_ok, USE_ALIBI)
    offs_d = tl.arange(0, D_PAD)
    io_mask = row_ok[:, None] & (offs_d[None, :] < D)
    q_row = q + token * stride_qt + head[:, None] * stride_qh
    q_tile = tl.load(q_row + offs_d[None, :], mask=io_mask, other=0.0)
    q_tail = _load_tail(q_row, row_ok, D, D_PAD, D_TAIL_PAD, q_tile)
    key_lo = _first_key(context - 1, window, USE_WINDOW)
    key_hi = context
    if SPLIT:  # an even share of this sequence's key tiles, whole tiles each
        tiles_per_split = tl.cdiv(tl.cdiv(key_hi - key_lo, BLOCK_N), num_splits)
        key_lo = key_lo + split * tiles_per_split * BLOCK_N
        key_hi = tl.minimum(key_hi, key_lo + tiles_per_split * BLOCK_N)
    table_row = block_tables + seq * stride_bt
    k_scale, v_scale = _kv_head_scales(kv_scales, kv_heads, kv_head, FP8_KV)
    q_tile, q_tail, score_scale, v_mult, out_scale = _fp8_operands(q_tile, q_tail, qk_scale, k_scale, v_scale,
                                                                   FP8_F16_DOTS, V_SLOT_MAJOR)
    acc, m_i, l_i = _attend_range(q_tile, q_tail, q_pos, slope, k_cache, v_cache, table_row, key_lo, key_lo,
                                  key_hi, key_hi, kv_head, stride_kb, stride_kt, stride_kh, stride_vb, stride_vt,
                                  stride_vh, stride_vd, score_scale, v_mult, cap, window, G_PAD, BLOCK_N, BLOCK_SIZE, D,
                                  D_PAD,
                                  D_TAIL_PAD, DV, DV_PAD, USE_WINDOW, USE_ALIBI, USE_SOFTCAP, NUM_STAGES, PRECISION,
                                  FP8_KV, V_SLOT_MAJOR)
    empty = l_i == 0.0
    l_i = tl.where(empty, 1.0, l_i)
    result = acc / l_i[:, None] * out_scale
    offs_dv = tl.arange(0, DV_PAD)
    out_mask = row_ok[:, None] & (offs_dv[None, :] < DV)
    if SPLIT:
        part = (index * num_q_heads + head) * num_splits + split
        tl.store(part_out + part[:, None] * DV + offs_dv[None, :], result, mask=out_mask)
        tl.store(part_lse + part, tl.where(empty, NEG_BIG, m_i + tl.log2(l_i)), mask=row_ok)
        if MERGE:
            _merge_if_last(out, amax, part_out, part_lse, arrivals, token, head, row_ok, index, num_splits,
                           num_q_heads, stride_ot, stride_oh, DV, DV_PAD, JOIN_AMAX)
    else:
        _store_output(out, token * stride_ot + head[:, None] * stride_oh + offs_dv[None, :], result, out_mask, amax,
                      JOIN_AMAX)


@triton.jit
def _merge_if_last(out, amax, part_out, part_lse, arrivals, token, head, row_ok, index, num_splits, num_q_heads,
                   stride_ot, stride_oh, DV: tl.constexpr, DV_PAD: tl.constexpr, JOIN_AMAX: tl.constexpr):
    """Counts this program's split in; the last of a (decode, program)'s splits to arrive merges their results
    as ``_reduce_kernel`` would and zeroes the counter for the next launch. CUTLASS's semaphore pattern: the
    program's stores, a barrier, then one release-acquire atomic (the last arrival sees every split's stores);
    the partial results are read past L1, which is not coherent across SMs."""
    tl.debug_barrier()
    slot = arrivals + index * tl.num_programs(1) + tl.program_id(1)
    if tl.atomic_add(slot, 1, sem="acq_rel", scope="gpu") == num_splits - 1:
        base = (index * num_q_heads + head) * num_splits  # [G_PAD]: each head's first split
        offs_dv = tl.arange(0, DV_PAD)
        top = tl.full(head.shape, NEG_BIG, tl.float32)
        for s in range(num_splits):
            top = tl.maximum(top, tl.load(part_lse + base + s, mask=row_ok, other=NEG_BIG, cache_modifier=".cg"))
        total = tl.zeros(head.shape, tl.float32)
        acc = tl.zeros([head.shape[0], DV_PAD], tl.float32)
        for s in range(num_splits):
            weight = tl.exp2(tl.load(part_lse + base + s, mask=row_ok, other=NEG_BIG, cache_modifier=".cg") - top)
            partial = tl.load(part_out + (base + s)[:, None] * DV + offs_dv[None, :],
                              mask=row_ok[:, None] & (offs_dv[None, :] < DV), other=0.0, cache_modifier=".cg")
            acc += partial * weight[:, None]
            total += weight
        _store_output(out, token * stride_ot + head[:, None] * stride_oh + offs_dv[None, :], acc / total[:, None],
                      row_ok[:, None] & (offs_dv[None, :] < DV), amax, JOIN_AMAX)
        tl.atomic_xchg(slot, 0)


@triton.jit(do_not_specialize=['num_splits'])
def _reduce_kernel(out, amax, part_out, part_lse, query_start, decode_seqs, num_splits, num_q_heads,
                   stride_ot, stride_oh, SPLITS_PAD: tl.constexpr, DV: tl.constexpr, DV_PAD: tl.constexpr,
                   JOIN_AMAX: tl.constexpr, PDL: tl.constexpr):
    pdl_wait(PDL)
    index = tl.program_id(0)
    head = tl.program_id(1)
    token = tl.load(query_start + tl.load(decode_seqs + index))
    splits = tl.arange(0, SPLITS_PAD)
    offs_d = tl.arange(0, DV_PAD)
    split_ok = splits < num_splits
    part = (index * num_q_heads + head) * num_splits + splits
    lse = tl.load(part_lse + part, mask=split_ok, other=float("-inf"))
    weight = tl.exp2(lse - tl.max(lse, 0))
    weight = weight / tl.sum(weight, 0)
    partial = tl.load(part_out + part[:, None] * DV + offs_d[None, :],
                      mask=split_ok[:, None] & (offs_d[None, :] < DV), other=0.0)
    result = tl.sum(partial * weight[:, None], 0)
    _store_output(out, token * stride_ot + head * stride_oh + offs_d[None, :], result[None, :],
                  (offs_d < DV)[None, :], amax, JOIN_AMAX)


def paged_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, batch,
                    params: AttentionParams, config: dict = CONFIGS["default"],
                    arrivals: torch.Tensor | None = None, amax: torch.Tensor | None = None) -> torch.Tensor:
    """The op (contract: mii_core/model/ops.py) under the launch ``config`` (see :func:`launch_config`);
    ``arrivals``: zeroed int32 counters with which a split decode merges its splits in its last program
    (``_merge_splits``) instead of a reduce launch; None, or too few for the step: the reduce kernel.
    ``amax``: float32 [] that every program writing output joins its largest |value| into."""
    _check_inputs(q, k_cache, v_cache, batch, params)
    if q.stride(-1) != 1:
        q = q.contiguous()
    out = torch.empty((*q.shape[:2], v_cache.shape[3]), dtype=q.dtype, device=q.device)
    num_decodes = batch.decode_seqs.shape[0]
    if num_decodes:
        _launch_decode(out, q, k_cache, v_cache, batch, params, config, num_decodes, arrivals, amax)
    if num_decodes < batch.num_seqs:
        _launch_prefill(out, q, k_cache, v_cache, batch, params, config, skip_decodes=num_decodes > 0, amax=amax)
    return out


def _value_layout(v_cache: torch.Tensor) -> int:
    """The kernels' ``V_SLOT_MAJOR``: 0 values along the features, 1 along each block's slots, ``SLOTS_IN_RUNS``
    along the slots with every run of 16 slots 16-byte aligned (each stride but the slot's, the block size and
    the start multiples of 16), so that a tile loads as vectors."""
    if not values_along_slots(v_cache):
        return 0
    # in bytes: an FP8 cache's elements are bytes
    aligned = (v_cache.stride(0), v_cache.stride(2), v_cache.stride(3), v_cache.shape[1], v_cache.data_ptr())
    return SLOTS_IN_RUNS if v_cache.element_size() == 1 and all(x % 16 == 0 for x in aligned) else 1


def _check_inputs(q, k_cache, v_cache, batch, params: AttentionParams) -> None:
    if q.dim() != 3 or k_cache.dim() != 4 or v_cache.dim() != 4 or k_cache.shape[:3] != v_cache.shape[:3]:
        raise ValueError(f"paged_attention takes q [T, Hq, D], k_cache [blocks, block_size, Hkv, D] and v_cache "
                         f"[blocks, block_size, Hkv, Dv]; got q {tuple(q.shape)}, k_cache {tuple(k_cache.shape)}, "
                         f"v_cache {tuple(v_cache.shape)}")
    heads, dim = q.shape[1:]
    if heads % k_cache.shape[2] or k_cache.shape[3] != dim or k_cache.shape[1] != batch.block_size:
        raise ValueError(f"q heads {heads} must be a multiple of the cache's KV heads {k_cache.shape[2]}, head "
                         f"sizes must match ({dim} vs {k_cache.shape[3]}) and the cache's block size "
                         f"{k_cache.shape[1]} must be the batch's {batch.block_size}")
    if max(dim, v_cache.shape[3]) > MAX_HEAD_SIZE:
        raise ValueError(f"the Triton paged_attention handles head sizes up to {MAX_HEAD_SIZE}, not "
                         f"{max(dim, v_cache.shape[3])}")
    fp8 = params.kv_scales is not None
    if k_cache.stride(-1) != 1 or (v_cache.stride(-1) != 1 and not values_along_slots(v_cache)) or \
            (k_cache.dtype != q.dtype and not fp8):
        raise ValueError("the KV cache must be contiguous along the head size (the values may be along a block's "
                         "slots instead) and have q's dtype (or be float8_e4m3fn, with params.kv_scales)")
    check_fp8_cache(k_cache, params.kv_scales, q.device, "paged_attention")
    slopes = params.alibi_slopes
    if slopes is not None and (tuple(slopes.shape) != (heads,) or slopes.dtype != torch.float32 or
                               slopes.device != q.device or not slopes.is_contiguous()):
        raise ValueError(f"alibi_slopes must be a contiguous float32 tensor of one slope per query head "
                         f"[{heads}] on {q.device}; got {slopes.dtype} {tuple(slopes.shape)} on {slopes.device}")


def _common_args(q, k_cache, v_cache, out, batch, params: AttentionParams):
    cap = params.logit_softcap
    # log2-domain scores: the cap's tanh takes scale · qk / cap and gives back cap · log2(e) times it
    qk_scale, cap_log2 = (params.scale / cap, cap * LOG2_E) if cap is not None else (params.scale * LOG2_E, 0.0)
    strides = (out.stride(0), out.stride(1), q.stride(0), q.stride(1), batch.block_tables.stride(0),
               *k_cache.stride()[:3], *v_cache.stride(), qk_scale, cap_log2, params.window or 0)
    dim, value_dim = q.shape[2], v_cache.shape[3]
    meta = dict(BLOCK_SIZE=batch.block_size, D=dim, **_key_tiles(dim), DV=value_dim,
                DV_PAD=_value_tile(value_dim, dim),
                USE_WINDOW=params.window is not None, USE_ALIBI=params.alibi_slopes is not None,
                USE_SOFTCAP=cap is not None, PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
                FP8_KV=params.kv_scales is not None,
                FP8_F16_DOTS=params.kv_scales is not None and q.dtype != torch.float32,
                V_SLOT_MAJOR=_value_layout(v_cache))
    slopes = params.alibi_slopes if params.alibi_slopes is not None else q  # a placeholder, never read
    kv_scales = params.kv_scales if params.kv_scales is not None else q  # a placeholder, never read
    return (slopes, kv_scales), strides, meta


def _key_tiles(dim: int) -> dict:
    """D_PAD, the key features of the main product (a power of two, at least 16), and D_TAIL_PAD, those of a
    second one (0: none). A key wider than 256 that is no power of two is split as 576 = 512 + 64 rather
    than padded to 1024; narrower ones keep one padded product (80 → 128), as they always have."""
    padded = max(16, triton.next_power_of_2(dim))
    if padded <= 256 or padded == dim:
        return dict(D_PAD=padded, D_TAIL_PAD=0)
    main = padded // 2
    return dict(D_PAD=main, D_TAIL_PAD=max(16, triton.next_power_of_2(dim - main)))


def _value_tile(value_dim: int, dim: int) -> int:
    """DV_PAD: the value features a tile holds, padded up to the key tile's ``D_PAD`` where that is wider.
    Triton 3.6 on sm_90 computes prefill wrongly (or reads out of bounds with 4 warps) when a value tile is
    narrower than its key tile at 64-key tiles: 24/16, 32/16 and 48/32 key/value features all failed in bf16
    and fp16, with the value beside the key or inside it, and all were right once padded (H200, 2026-12-02,
    benchmarks/diagnose_attention_layouts.py). The padded features are masked: no extra memory is read."""
    return max(16, triton.next_power_of_2(value_dim), _key_tiles(dim)["D_PAD"])


def _cache_views(k_cache, v_cache):
    """An FP8 cache as its bytes (the interpreter has no float8 tensors; the kernels bitcast each tile)."""
    if k_cache.dtype == torch.float8_e4m3fn:
        return k_cache.view(torch.uint8), v_cache.view(torch.uint8)
    return k_cache, v_cache


def _head_size_class(meta: dict) -> str:
    """The suffix of the config keys for this head size: "" up to 128 padded features, "_large_d" up to
    256, "_huge_d" beyond (smaller tiles, and at most ``group_rows_huge_d`` query heads a program)."""
    padded = max(meta["D_PAD"] + meta["D_TAIL_PAD"], meta["DV_PAD"])
    return "" if padded <= 128 else "_large_d" if padded <= 256 else "_huge_d"


def _group_rows(group: int, least: int, size_class: str, cfg: dict) -> int:
    """Query heads of one KV head a program takes (a power of two, at least ``least``); below ``group`` the
    group is split over programs, each reading the keys again (the price of huge heads' registers)."""
    rows = max(least, triton.next_power_of_2(group))
    return max(least, min(rows, cfg["group_rows_huge_d"])) if size_class == "_huge_d" else rows


def _launch_prefill(out, q, k_cache, v_cache, batch, params, cfg, skip_decodes, amax=None):
    tensors, strides, meta = _common_args(q, k_cache, v_cache, out, batch, params)
    k_cache, v_cache = _cache_views(k_cache, v_cache)
    size_class = _head_size_class(meta)
    kv_heads = k_cache.shape[2]
    group = q.shape[1] // kv_heads
    group_pad = _group_rows(group, 1, size_class, cfg)
    block_m = cfg["prefill_block_m" + size_class]
    block_q = max(block_m // group_pad, -(-16 // group_pad))  # tl.dot needs at least 16 rows
    grid = (q.shape[0] // block_q + batch.num_seqs, kv_heads * -(-group // group_pad))
    _prefill_kernel[grid](
        out, out if amax is None else amax, q, k_cache, v_cache, batch.block_tables, batch.query_start,
        batch.context_lens, *tensors,
        batch.num_seqs, kv_heads, *strides, G=group, G_PAD=group_pad, BLOCK_Q=block_q,
        BLOCK_N=cfg["prefill_block_n" + size_class], SKIP_DECODES=skip_decodes,
        NUM_STAGES=cfg["prefill_stages"], JOIN_AMAX=amax is not None, num_warps=cfg["prefill_warps"],
        **meta, **pdl_launch(q))


def _launch_decode(out, q, k_cache, v_cache, batch, params, cfg, num_decodes, arrivals=None, amax=None):
    tensors, strides, meta = _common_args(q, k_cache, v_cache, out, batch, params)
    k_cache, v_cache = _cache_views(k_cache, v_cache)
    heads, kv_heads = q.shape[1], k_cache.shape[2]
    group = heads // kv_heads
    size_class = _head_size_class(meta)
    group_pad = _group_rows(group, 16, size_class, cfg)
    programs = kv_heads * -(-group // group_pad)  # per decode and split
    splits = decode_splits(num_decodes, programs, batch.block_tables.shape[1] * batch.block_size, params.window,
                           q.device, cfg)
    part_out = part_lse = out  # placeholders, unused without a split
    if splits > 1:
        part_out = torch.empty((num_decodes, heads, splits, meta["DV"]), dtype=torch.float32, device=q.device)
        part_lse = torch.empty((num_decodes, heads, splits), dtype=torch.float32, device=q.device)
    # the splits merged by their last program where there are counters for every (decode, program)
    merge_in_kernel = splits > 1 and arrivals is not None and arrivals.numel() >= num_decodes * programs
    amax_or_placeholder = out if amax is None else amax
    _decode_kernel[(num_decodes, programs, splits)](
        out, amax_or_placeholder, part_out, part_lse, q, k_cache, v_cache, batch.block_tables, batch.query_start,
        batch.context_lens,
        *tensors, batch.decode_seqs, arrivals if merge_in_kernel else part_lse, splits, heads, kv_heads, *strides,
        G=group, G_PAD=group_pad, BLOCK_N=_decode_block_n(cfg, size_class, meta), SPLIT=splits > 1,
        MERGE=merge_in_kernel, NUM_STAGES=cfg["decode_fp8_stages" if meta["FP8_KV"] else "decode_stages"],
        JOIN_AMAX=amax is not None, num_warps=cfg["decode_warps"], **meta, **pdl_launch(q))
    if splits > 1 and not merge_in_kernel:
        _reduce_kernel[(num_decodes, heads)](
            out, amax_or_placeholder, part_out, part_lse, batch.query_start, batch.decode_seqs, splits, heads,
            out.stride(0), out.stride(1), SPLITS_PAD=_REDUCE_LANES, DV=meta["DV"], DV_PAD=meta["DV_PAD"],
            JOIN_AMAX=amax is not None, num_warps=4, **pdl_launch(q))


def _decode_block_n(cfg: dict, size_class: str, meta: dict) -> int:
    """Keys a decode program takes per tile: the config's for the head size, times its FP8 factor on an FP8 cache."""
    block_n = cfg["decode_block_n" + size_class]
    return block_n * cfg["decode_fp8_block_n_scale"] if meta["FP8_KV"] else block_n


# one lane per possible split, whatever this step's count: a single compiled reduce kernel instead of one
# per power of two, so no step compiles a new variant in the middle of a run
_REDUCE_LANES = 64
# split-arrival counters a TritonAttention holds per device: one per (decode, program) of a split decode step
# (256 sequences x 32 programs of a 32-KV-head model use 8,192); a step needing more takes the reduce kernel.
# W2's step on the H200 spent 0.092 ms of its 3.2 in 32 reduce launches, and one launch gap each
# (profile_steps.py, 2026-12-03): merging in the splits' last program saves both.
_ARRIVAL_SLOTS = 65536


def decode_splits(num_decodes: int, kv_heads: int, max_keys: int, window: int | None,
                  device: torch.device, cfg: dict = CONFIGS["default"]) -> int:
    """How many key ranges each decode is split into: enough programs to fill the GPU, each with at least
    ``decode_min_keys_per_split`` keys of the longest possible context. Shapes only, never the data: a
    captured graph keeps its split count. A power of two, so few variants get compiled."""
    if cfg["decode_splits"] is not None:
        return min(cfg["decode_splits"], _REDUCE_LANES)
    if window is not None:
        max_keys = min(max_keys, window)
    by_work = -(-max_keys // cfg["decode_min_keys_per_split"])
    by_fill = -(-cfg["decode_target_waves"] * _multiprocessors(device) // (num_decodes * kv_heads))
    splits = max(1, min(by_work, by_fill, cfg["decode_max_splits"], _REDUCE_LANES))
    return 1 << (splits.bit_length() - 1)


_SM_COUNTS: dict[int, int] = {}


def _multiprocessors(device: torch.device) -> int:
    if device.type != "cuda":
        return 8  # the interpreter: any small figure
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SM_COUNTS:
        _SM_COUNTS[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _SM_COUNTS[index]
