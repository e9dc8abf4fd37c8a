"""Fused mixture of experts: picks grouped by expert, then one grouped GEMM per projection.

Contract (``mii_core.model.ops.moe_experts``): ``x`` [T, H] (any strides), ``topk_ids`` [T, k]
integer, ``topk_weights`` [T, k] float, ``w_gate_up`` [E, 2F, H] and ``w_down`` [E, H, F] (any
strides; contiguous along the last dimension is the fast case). Returns a new [T, H] tensor in x's dtype.
Expert ids must lie in [0, E): one outside is not checked (that would need a host sync) and leaves that
token's output undefined.

Three steps and two small PyTorch ops, none of which synchronises with the host:
1. ``_align``: groups the T·k picks by expert, pads each expert's run to a multiple of BLOCK_M, writes
   ``sorted_picks`` (pick index, or the sentinel T·k on padding) and the expert of every BLOCK_M block:
   a count per chunk of picks, one small program for the runs' offsets, a scatter per chunk. Buffers have
   the static upper bound T·k + min(E, T·k)·(BLOCK_M - 1), so the grids below never depend on the
   routing: blocks past the used ones exit at once.
2. ``_gate_up_kernel``: per block, gate and up tiles of the block's expert on the gathered token rows,
   float32 accumulation, then act(gate) · up, written to an intermediate [padded picks, F].
3. ``_down_kernel``: the down projection of those rows, times the pick's routing weight, in float32 to
   a per-pick buffer [T·k, H] (no atomics: the result does not depend on scheduling); the k picks of a
   token are then summed in float32 and cast to x's dtype.
Rounding follows the reference: gate/up and the down output are rounded to x's dtype where the
PyTorch reference's matmuls round them.

Quantized experts (``quant_moe_experts``, weight-only in every mode) run the same kernels with ``FORMAT``
set: each weight tile's codes are decoded in registers (quant_decode.py; FP6 bit planes as four quarters of
each K chunk, one ``tl.dot`` each, so BLOCK_K is at least a 64-code block) and the float32 accumulator is
multiplied by the rows' scales after the K loop. Shipped block-wise FP8 stacks (a scale per row and
``group_size`` input columns) set ``GROUP_K``: BLOCK_K divides the group, so each K tile's sums are scaled by
their group before joining the accumulator; a group the kernels cannot tile (not a power of two, or below
16) is dequantized to x's dtype and run through ``moe_experts`` (correct, slower).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from mii_core.model.quantization import QuantizedWeight
from mii_kernels.triton.activations import activation_id, apply_activation
from mii_kernels.triton.amax import join_max
from mii_kernels.triton.configs import pick_config
from mii_kernels.triton.e4m3 import converts_to_e4m3
from mii_kernels.triton.fp8_activation import quantize_per_tensor, quantize_with_amax
from mii_kernels.triton.quant_decode import (DECODED_FACTOR, FORMAT_E3M2, FORMAT_E4M3_NATIVE, FP6_BLOCK, dot_operands,
                                             fp6_dot_chunk, load_decoded, plane_bytes_of, weight_format)

_FP6 = tl.constexpr(FORMAT_E3M2)


@triton.jit
def _owner(slots, padded_end):
    """The expert whose padded run holds each slot: how many runs end at or before it."""
    return tl.sum((padded_end[None, :] <= slots[:, None]).to(tl.int32), axis=1)


# routing-dependent counts are not specialised on: that would compile new variants mid-run
@triton.jit(do_not_specialize=['picks'])
def _count_kernel(ids_ptr, counts_ptr, picks, E_PAD: tl.constexpr, CHUNK: tl.constexpr):
    """Row p of counts [programs, E_PAD]: how many of the picks in chunk p chose each expert."""
    chunk = tl.program_id(0)
    experts = tl.arange(0, E_PAD)
    i = chunk * CHUNK + tl.arange(0, CHUNK)
    ids = tl.load(ids_ptr + i, mask=i < picks, other=-1)
    tl.store(counts_ptr + chunk * E_PAD + experts, tl.sum((ids[:, None] == experts[None, :]).to(tl.int32), axis=0))


@triton.jit(do_not_specialize=['programs', 'num_blocks'])
def _offsets_kernel(counts_ptr, first_slot_ptr, block_expert_ptr, programs, num_blocks,
                    BLOCK_M: tl.constexpr, E_PAD: tl.constexpr, ROWS: tl.constexpr, CHUNK: tl.constexpr):
    """One program over the chunks' counts, ROWS chunks at a time: each expert's run padded to a multiple
    of BLOCK_M, the slot where each chunk's first pick of each expert goes (runs in expert order, chunks in
    pick order within a run), and the expert of every BLOCK_M block."""
    experts = tl.arange(0, E_PAD)
    totals = tl.zeros([E_PAD], dtype=tl.int32)
    for start in range(0, programs, ROWS):
        rows = start + tl.arange(0, ROWS)
        counts = tl.load(counts_ptr + rows[:, None] * E_PAD + experts[None, :], mask=rows[:, None] < programs,
                         other=0)
        totals += tl.sum(counts, axis=0)
    padded = (totals + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    padded_end = tl.cumsum(padded, axis=0)
    running = padded_end - padded  # the next free slot of each expert's run
    for start in range(0, programs, ROWS):
        rows = start + tl.arange(0, ROWS)
        at = rows[:, None] * E_PAD + experts[None, :]
        counts = tl.load(counts_ptr + at, mask=rows[:, None] < programs, other=0)
        tl.store(first_slot_ptr + at, running[None, :] + tl.cumsum(counts, axis=0) - counts,
                 mask=rows[:, None] < programs)
        running += tl.sum(counts, axis=0)
    for start in range(0, num_blocks, CHUNK):
        blocks = start + tl.arange(0, CHUNK)
        tl.store(block_expert_ptr + blocks, _owner(blocks * BLOCK_M, padded_end), mask=blocks < num_blocks)


@triton.jit(do_not_specialize=['picks'])
def _scatter_kernel(ids_ptr, first_slot_ptr, sorted_ptr, picks, E_PAD: tl.constexpr, CHUNK: tl.constexpr):
    """Each pick of chunk p to its slot: the chunk's first slot for its expert plus the picks of that expert
    before it in the chunk (a stable counting sort)."""
    chunk = tl.program_id(0)
    experts = tl.arange(0, E_PAD)
    i = chunk * CHUNK + tl.arange(0, CHUNK)
    ids = tl.load(ids_ptr + i, mask=i < picks, other=-1)
    onehot = (ids[:, None] == experts[None, :]).to(tl.int32)
    first = tl.load(first_slot_ptr + chunk * E_PAD + experts)
    slot = first[None, :] + tl.cumsum(onehot, axis=0) - onehot
    dest = tl.sum(tl.where(onehot > 0, slot, 0), axis=1)
    tl.store(sorted_ptr + dest, i, mask=(i < picks) & (tl.sum(onehot, axis=1) > 0))


@triton.jit
def _fp8_dot(a_codes, w_codes, acc, NATIVE_E4M3: tl.constexpr, FAST_ACCUM: tl.constexpr):
    """``acc`` plus the product of two tiles of e4m3 codes (uint8): on the FP8 tensor cores where compiled for
    sm_89+, else (the interpreter) in float32, where every product of two e4m3 values is exact.

    Hopper's FP8 warp-group MMA keeps fewer bits than float32 in its accumulator (about 22: SageAttention2;
    DeepSeek-V3 measured up to 2% at K = 4,096), and Triton lets a chain of them run over the whole K loop by
    default on sm_90 (``max_num_imprecise_acc`` 2**30). The contract sums in float32, so by default each tile's
    products join the float32 accumulator as they come out (at most BLOCK_K of them in the MMA's own:
    DeepSeek-V3's remedy, whose interval was 128). That costs registers (the 64-row gate/up tile's sm_90 cubin:
    186 a thread against 128) and a wait per tile; the launch config's ``fp8_fast_accum`` (config
    "fp8_fast_accum") keeps Triton's default, for measuring what the precision costs. Tiles of fewer than 64
    rows compile to 16-bit MMA of upcast codes on sm_90, exact either way."""
    a = a_codes.to(tl.float8e4nv, bitcast=True)
    w = w_codes.to(tl.float8e4nv, bitcast=True)
    if NATIVE_E4M3:
        if FAST_ACCUM:
            return tl.dot(a, w, acc)
        return tl.dot(a, w, acc, max_num_imprecise_acc=a.shape[1])
    return tl.dot(a.to(tl.float32), w.to(tl.float32), acc, input_precision="ieee")


@triton.jit
def _block_tile(sorted_ptr, block_expert_ptr, num_blocks, n_size, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                GROUP_M: tl.constexpr):
    """This program's block of sorted picks and n tile, GROUP_M blocks at a time over every n tile (L2
    reuse of their rows): (the block's expert, its padded rows, their picks, the n indices)."""
    pid = tl.program_id(0)
    in_group = GROUP_M * tl.cdiv(n_size, BLOCK_N)
    first = (pid // in_group) * GROUP_M
    group_rows = tl.minimum(num_blocks - first, GROUP_M)
    block = first + (pid % in_group) % group_rows
    n = ((pid % in_group) // group_rows) * BLOCK_N + tl.arange(0, BLOCK_N)
    rows = block * BLOCK_M + tl.arange(0, BLOCK_M)
    return tl.load(block_expert_ptr + block).to(tl.int64), rows, tl.load(sorted_ptr + rows), n


@triton.jit(do_not_specialize=['picks', 'num_blocks'])
def _gate_up_kernel(x_ptr, w_ptr, out_ptr, sorted_ptr, block_expert_ptr, picks, num_experts, num_blocks,
                    hidden, features, stride_xt, stride_xh, stride_we, stride_wn, stride_wh, scale_ptr, factor,
                    scale_columns, plane_bytes, x_scale_ptr, amax_ptr,
                    TOP_K: tl.constexpr, ACTIVATION: tl.constexpr, PRECISION: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                    GROUP_M: tl.constexpr, FORMAT: tl.constexpr, GROUP_K: tl.constexpr,
                    FP8_ACTIVATIONS: tl.constexpr, NATIVE_E4M3: tl.constexpr, FP8_FAST_ACCUM: tl.constexpr):
    expert, rows, pick, n = _block_tile(sorted_ptr, block_expert_ptr, num_blocks, features, BLOCK_M, BLOCK_N,
                                        GROUP_M)
    if expert >= num_experts:  # a block past the used ones
        return
    valid = pick < picks
    token = (pick // TOP_K).to(tl.int64)
    n_ok = n < features
    k = tl.arange(0, BLOCK_K)
    # scalar bases that move along K, tile offsets that stay: fewer live registers than pointer tiles
    x_rows = x_ptr + token[:, None] * stride_xt
    gate_base = w_ptr + expert * stride_we
    up_base = gate_base + features * stride_wn
    w_offsets = n[None, :] * stride_wn + k[:, None] * stride_wh
    gate_rows = gate_base + n[None, :] * stride_wn  # quantized: each code row's start (bytes)
    up_rows = gate_rows + features * stride_wn
    acc_gate = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    acc_up = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    if FORMAT == _FP6:  # each chunk as four quarter products (quant_decode.py); x's quarters read twice (L1)
        for k0 in range(0, hidden, BLOCK_K):
            acc_gate = fp6_dot_chunk(acc_gate, x_rows, stride_xh, valid, gate_rows, n_ok, k0, hidden, plane_bytes,
                                     BLOCK_K, PRECISION)
            acc_up = fp6_dot_chunk(acc_up, x_rows, stride_xh, valid, up_rows, n_ok, k0, hidden, plane_bytes, BLOCK_K,
                                   PRECISION)
    else:
        for k0 in range(0, hidden, BLOCK_K):
            k_ok = k + k0 < hidden
            a = tl.load(x_rows + (k0 + k)[None, :] * stride_xh, mask=valid[:, None] & k_ok[None, :], other=0.0)
            w_mask = k_ok[:, None] & n_ok[None, :]
            if FP8_ACTIVATIONS:  # the weights' codes as stored, for x's codes (the scales after the loop)
                w_gate = tl.load(gate_rows + (k0 + k)[:, None], mask=w_mask, other=0)
                w_up = tl.load(up_rows + (k0 + k)[:, None], mask=w_mask, other=0)
            elif FORMAT == 0:
                w_gate = tl.load(gate_base + w_offsets, mask=w_mask, other=0.0)
                w_up = tl.load(up_base + w_offsets, mask=w_mask, other=0.0)
            else:
                a, w_gate = dot_operands(a, load_decoded(gate_rows, (k0 + k)[:, None], w_mask, FORMAT))
                a, w_up = dot_operands(a, load_decoded(up_rows, (k0 + k)[:, None], w_mask, FORMAT))
            if FP8_ACTIVATIONS:
                acc_gate = _fp8_dot(a, w_gate, acc_gate, NATIVE_E4M3, FP8_FAST_ACCUM)
                acc_up = _fp8_dot(a, w_up, acc_up, NATIVE_E4M3, FP8_FAST_ACCUM)
            elif GROUP_K == 0:
                acc_gate = tl.dot(a, w_gate, acc_gate, input_precision=PRECISION)
                acc_up = tl.dot(a, w_up, acc_up, input_precision=PRECISION)
            else:  # the tile lies in one column group: its sums take each row's scale of that group
                group_scales = scale_ptr + (expert * 2 * features + n) * scale_columns + k0 // GROUP_K
                acc_gate += tl.dot(a, w_gate, input_precision=PRECISION) * \
                    tl.load(group_scales, mask=n_ok, other=0.0)[None, :]
                acc_up += tl.dot(a, w_up, input_precision=PRECISION) * \
                    tl.load(group_scales + features * scale_columns, mask=n_ok, other=0.0)[None, :]
            gate_base += BLOCK_K * stride_wh
            up_base += BLOCK_K * stride_wh
    if GROUP_K != 0:
        acc_gate *= factor
        acc_up *= factor
    elif FORMAT != 0:  # each output row's scale, [gate | up] rows per expert (and x's one scale)
        scales = scale_ptr + expert * 2 * features + n
        if FP8_ACTIVATIONS:
            factor = factor * tl.load(x_scale_ptr)
        acc_gate *= tl.load(scales, mask=n_ok, other=0.0)[None, :] * factor
        acc_up *= tl.load(scales + features, mask=n_ok, other=0.0)[None, :] * factor
    dtype = out_ptr.dtype.element_ty
    # rounded where the reference's gate_up matmul and activation round
    gate = acc_gate.to(dtype).to(tl.float32)
    up = acc_up.to(dtype).to(tl.float32)
    hidden_act = (apply_activation(gate, ACTIVATION).to(dtype).to(tl.float32) * up).to(dtype)
    tl.store(out_ptr + rows[:, None].to(tl.int64) * features + n[None, :], hidden_act, mask=n_ok[None, :])
    if FP8_ACTIVATIONS:  # the down projection's activations are quantized per tensor: their largest |value|
        # (padding rows and columns hold act(0) · 0 = 0)
        join_max(amax_ptr, tl.max(tl.max(tl.abs(hidden_act.to(tl.float32)), axis=1), axis=0))


@triton.jit(do_not_specialize=['picks', 'num_blocks'])
def _down_kernel(h_ptr, w_ptr, out_ptr, route_ptr, sorted_ptr, block_expert_ptr, picks, num_experts, num_blocks,
                 hidden, features, stride_we, stride_wh, stride_wf, scale_ptr, factor, scale_columns, plane_bytes,
                 h_codes_ptr, h_scale_ptr, PRECISION: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                 GROUP_M: tl.constexpr, FORMAT: tl.constexpr, GROUP_K: tl.constexpr,
                 FP8_ACTIVATIONS: tl.constexpr, NATIVE_E4M3: tl.constexpr, FP8_FAST_ACCUM: tl.constexpr):
    expert, rows, pick, n = _block_tile(sorted_ptr, block_expert_ptr, num_blocks, hidden, BLOCK_M, BLOCK_N, GROUP_M)
    if expert >= num_experts:
        return
    valid = pick < picks
    n_ok = n < hidden
    k = tl.arange(0, BLOCK_K)
    # with FP8 activations the A tiles are the codes of h (quantized per tensor); h, in x's dtype, is then read by
    # nobody here, but its dtype is what the output rounds to
    if FP8_ACTIVATIONS:
        a_ptrs = h_codes_ptr + rows[:, None].to(tl.int64) * features + k[None, :]
    else:
        a_ptrs = h_ptr + rows[:, None].to(tl.int64) * features + k[None, :]
    w_rows = w_ptr + expert * stride_we + n[None, :] * stride_wh  # quantized: each code row's start (bytes)
    w_ptrs = w_rows + k[:, None] * stride_wf
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    if FORMAT == _FP6:
        h_rows = h_ptr + rows[:, None].to(tl.int64) * features
        for k0 in range(0, features, BLOCK_K):
            acc = fp6_dot_chunk(acc, h_rows, 1, valid, w_rows, n_ok, k0, features, plane_bytes, BLOCK_K, PRECISION)
    else:
        for k0 in range(0, features, BLOCK_K):
            k_ok = k + k0 < features
            a = tl.load(a_ptrs, mask=valid[:, None] & k_ok[None, :], other=0.0)
            if FP8_ACTIVATIONS:
                w = tl.load(w_rows + (k0 + k)[:, None], mask=k_ok[:, None] & n_ok[None, :], other=0)
            elif FORMAT == 0:
                w = tl.load(w_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
            else:
                codes = load_decoded(w_rows, (k0 + k)[:, None], k_ok[:, None] & n_ok[None, :], FORMAT)
                a, w = dot_operands(a, codes)
            if FP8_ACTIVATIONS:
                acc = _fp8_dot(a, w, acc, NATIVE_E4M3, FP8_FAST_ACCUM)
            elif GROUP_K == 0:
                acc = tl.dot(a, w, acc, input_precision=PRECISION)
            else:
                group_scales = scale_ptr + (expert * hidden + n) * scale_columns + k0 // GROUP_K
                acc += tl.dot(a, w, input_precision=PRECISION) * tl.load(group_scales, mask=n_ok, other=0.0)[None, :]
            a_ptrs += BLOCK_K
            w_ptrs += BLOCK_K * stride_wf
    if GROUP_K != 0:
        acc *= factor
    elif FORMAT != 0:
        if FP8_ACTIVATIONS:
            factor = factor * tl.load(h_scale_ptr)
        acc *= tl.load(scale_ptr + expert * hidden + n, mask=n_ok, other=0.0)[None, :] * factor
    route = tl.load(route_ptr + pick, mask=valid, other=0.0).to(tl.float32)
    weighted = acc.to(h_ptr.dtype.element_ty).to(tl.float32) * route[:, None]
    tl.store(out_ptr + pick[:, None].to(tl.int64) * hidden + n[None, :], weighted, mask=valid[:, None] & n_ok[None, :])


# Launch settings by name (env MII_TRITON_MOE_CONFIG, read when a kernel set builds its TritonMoe, or
# TritonMoe(config)), so that benchmarks/kernel_bench_ops.py can compare them in one GPU run. A config
# ladders tiles (BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_warps, num_stages) by a measure of the step: "picks"
# (T·k) or "per_expert" (T·k / E, the rows an expert gets on average, which is what a block of BLOCK_M
# rows pads: Qwen3-MoE's decode at T = 256 gives 2,048 picks but 16 rows an expert). "default" holds the
# first, untuned guesses (vLLM's fused_moe range) until the GPU says otherwise; the others are candidates.
_DECODE, _MIDDLE, _PREFILL = (16, 64, 128, 1, 4, 4), (32, 64, 64, 4, 4, 3), (64, 128, 64, 8, 8, 3)
CONFIGS: dict[str, dict] = {
    "default": {"by": "picks", "ladder": ((64, _DECODE), (1024, _MIDDLE), (None, _PREFILL))},
    # the default's tiers for Mixtral's 8 experts, read per expert (64 / 8 = 8, 1024 / 8 = 128)
    "per_expert": {"by": "per_expert", "ladder": ((8, _DECODE), (128, _MIDDLE), (None, _PREFILL))},
    # 16-row blocks while an expert averages up to 32 rows (many small experts decoding)
    "per_expert_m16": {"by": "per_expert", "ladder": ((32, _DECODE), (128, _MIDDLE), (None, _PREFILL))},
    # as per_expert_m16 with 64-wide K tiles and 3 stages in the 16-row tier
    "per_expert_m16_k64": {"by": "per_expert",
                           "ladder": ((32, (16, 64, 64, 1, 4, 3)), (128, _MIDDLE), (None, _PREFILL))},
    # 64-row blocks from 32 rows an expert on: Mixtral's W1 decode (256 tokens, 64 rows an expert) then reads each
    # expert's weights once, not once per 32-row block (the default's middle tier read its FP8 codes at 1.8-2.4
    # TB/s on the H200, 2026-12-03); with FP8 activations that tier is the FP8 warp-group MMA's. Not measured yet
    "per_expert_m64": {"by": "per_expert", "ladder": ((8, _DECODE), (32, _MIDDLE), (None, _PREFILL))},
    # the default's tiles with the FP8 experts' products left in the FP8 MMA's own accumulator across the
    # whole K loop (Triton's default on sm_90; see _fp8_dot): what float32 sums cost, to measure
    "fp8_fast_accum": {"by": "picks", "ladder": ((64, _DECODE), (1024, _MIDDLE), (None, _PREFILL)),
                       "fp8_fast_accum": True},
    # The prefill tier with 128-wide K tiles, for the FP8 experts (a byte a code): their products then join the
    # float32 accumulator every 128 (DeepSeek-V3's interval), half as often as at 64; the H200 priced the
    # per-tile join of the 64-wide tiles at 16.3 against 13.0 ms for Mixtral's 8,192 tokens (2026-12-03). Two
    # stages, so that float32 experts' tiles (160 KB a stage) fit the H200's shared memory too. Not measured yet
    "fp8_k128": {"by": "picks", "ladder": ((64, _DECODE), (1024, _MIDDLE), (None, (64, 128, 128, 8, 8, 2)))},
}


def launch_config(config: str | dict | None = None) -> dict:
    """A name from ``CONFIGS`` or a whole config ({"by": ..., "ladder": ...}); None reads the name from
    ``MII_TRITON_MOE_CONFIG`` (default ``"default"``)."""
    return pick_config(config, CONFIGS, "MII_TRITON_MOE_CONFIG", "moe", _checked)


def _checked(config: dict) -> dict:
    if config.get("by") not in ("picks", "per_expert") or not config.get("ladder") or config["ladder"][-1][0] \
            or set(config) - {"by", "ladder", "fp8_fast_accum"}:
        raise ValueError(f"a moe config is {{'by': 'picks' | 'per_expert', 'ladder': ((limit, tile), ..., "
                         f"(None, tile)), optionally 'fp8_fast_accum': bool}}, got {config!r}")
    return dict(config)


def _tile(config: dict, picks: int, num_experts: int) -> tuple[int, ...]:
    measure = picks if config["by"] == "picks" else picks / num_experts
    return next(tile for limit, tile in config["ladder"] if limit is None or measure <= limit)


# Elements of a [rows, E_PAD] one-hot tile the align kernels hold at once (registers, not shared memory).
_ALIGN_TILE = 8192


def _align(flat_ids: torch.Tensor, num_experts: int, block_m: int, chunk: int | None = None):
    """(sorted picks, the expert of each block, blocks): the picks grouped by expert in pick order, each
    expert's run padded to a multiple of block_m with the sentinel T·k. Four launches at any size (a fill,
    then counts, offsets and scatter over chunks of ``chunk`` picks): none waits on the host, and the work of
    each grows with picks / chunk, not with picks · experts in one program (the one-program version took
    5.7 ms of a 13.9 ms Qwen3-MoE decode step of 256 tokens on the H200, 74 ms of a 114 ms prefill)."""
    picks = flat_ids.numel()
    padded_len = picks + min(num_experts, picks) * (block_m - 1)  # static bound: no host sync
    num_blocks = triton.cdiv(padded_len, block_m)
    e_pad = triton.next_power_of_2(num_experts)
    chunk = chunk or max(16, _ALIGN_TILE // e_pad)
    programs = triton.cdiv(picks, chunk)
    device = flat_ids.device
    sorted_picks = torch.full((num_blocks * block_m,), picks, dtype=torch.int32, device=device)
    block_expert = torch.empty(num_blocks, dtype=torch.int32, device=device)
    counts = torch.empty((programs, e_pad), dtype=torch.int32, device=device)
    first_slot = torch.empty_like(counts)
    _count_kernel[(programs,)](flat_ids, counts, picks, E_PAD=e_pad, CHUNK=chunk, num_warps=4)
    _offsets_kernel[(1,)](counts, first_slot, block_expert, programs, num_blocks, BLOCK_M=block_m, E_PAD=e_pad,
                          ROWS=max(1, _ALIGN_TILE // e_pad), CHUNK=max(16, _ALIGN_TILE // e_pad), num_warps=4)
    _scatter_kernel[(programs,)](flat_ids, first_slot, sorted_picks, picks, E_PAD=e_pad, CHUNK=chunk, num_warps=4)
    return sorted_picks, block_expert, num_blocks


def _check_shapes(x, topk_ids, w_gate_up, w_down) -> None:
    num_experts, hidden, features = w_down.shape
    if w_gate_up.shape != (num_experts, 2 * features, hidden) or x.shape[1] != hidden:
        raise ValueError(f"w_gate_up {tuple(w_gate_up.shape)} and w_down {tuple(w_down.shape)} do not fit "
                         f"x {tuple(x.shape)}: expected [E, 2F, H] and [E, H, F]")
    if topk_ids.dim() != 2 or topk_ids.shape[0] != x.shape[0]:
        raise ValueError(f"topk_ids must be [T, k] for x {tuple(x.shape)}, got {tuple(topk_ids.shape)}")


def moe_experts(x: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor, w_gate_up: torch.Tensor,
                w_down: torch.Tensor, activation: str, config: dict | None = None) -> torch.Tensor:
    """``config``: a launch config (``launch_config``'s); None: ``CONFIGS["default"]``."""
    _check_shapes(x, topk_ids, w_gate_up, w_down)
    return _run(x, topk_weights, topk_ids, (w_gate_up, w_gate_up.stride(), None),
                (w_down, w_down.stride(), None), w_down.shape, activation, 0, config=config)


def quant_moe_experts(x: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor,
                      w_gate_up: QuantizedWeight, w_down: QuantizedWeight, activation: str,
                      config: dict | None = None) -> torch.Tensor:
    """As ``moe_experts`` on quantized stacks (weight-only; contract in mii_core/model/ops.py)."""
    _check_shapes(x, topk_ids, w_gate_up, w_down)
    group = w_gate_up.group_size
    if group != w_down.group_size or (group is not None and (group < 16 or group & (group - 1))):
        return moe_experts(x, topk_weights, topk_ids, w_gate_up.dequantize(x.dtype), w_down.dequantize(x.dtype),
                           activation, config)  # column groups the kernels cannot tile: correct, slower
    codes = lambda w: (w.data.view(torch.uint8), w.data.stride(), w.scale)  # noqa: E731
    fmt = weight_format(w_down.mode, x.device)
    # FP8 tensor cores where the step quantizes its activations; a GPU without them (before sm_89) weight-only
    fp8_activations = w_gate_up.quantizes_activations_at(x.shape[0]) and fmt == FORMAT_E4M3_NATIVE
    return _run(x, topk_weights, topk_ids, codes(w_gate_up), codes(w_down), w_down.shape, activation, fmt,
                group or 0, config, fp8_activations)


class TritonMoe:
    """The ``moe_experts`` op with its launch config (registered as a class: each kernel set makes one,
    reading the environment then)."""

    def __init__(self, config: str | dict | None = None) -> None:
        self.config = launch_config(config)

    def __call__(self, x, topk_weights, topk_ids, w_gate_up, w_down, activation: str) -> torch.Tensor:
        return moe_experts(x, topk_weights, topk_ids, w_gate_up, w_down, activation, self.config)


class TritonQuantMoe(TritonMoe):
    """The ``quant_moe_experts`` op, with the same launch config as ``moe_experts``."""

    def __call__(self, x, topk_weights, topk_ids, w_gate_up, w_down, activation: str) -> torch.Tensor:
        return quant_moe_experts(x, topk_weights, topk_ids, w_gate_up, w_down, activation, self.config)


def _run(x, topk_weights, topk_ids, gate_up, down, down_shape, activation: str, fmt: int,
         group: int = 0, config: dict | None = None, fp8_activations: bool = False) -> torch.Tensor:
    """The three launches; ``gate_up`` / ``down``: (weights or codes, their strides, row scales or None);
    ``group``: input columns per scale (0: one scale per row); ``fp8_activations``: x, then act(gate) · up,
    quantized per tensor to e4m3 and multiplied with the e4m3 codes (the contract's mode "fp8")."""
    code = activation_id(activation)
    (tokens, hidden), (num_experts, _, features), top_k = x.shape, down_shape, topk_ids.shape[1]
    picks = tokens * top_k
    if picks == 0:
        return torch.zeros_like(x)
    config = config or CONFIGS["default"]
    block_m, block_n, block_k, group_m, warps, stages = _tile(config, picks, num_experts)
    block_k = min(block_k, group) if group else block_k  # a K tile within one column group
    if fmt == FORMAT_E3M2:
        block_k = max(block_k, FP6_BLOCK)  # whole 64-code blocks of the FP6 planes
    if x.element_size() == 4:
        stages = min(stages, 2)  # float32 tiles take twice the shared memory (float32 is for tests)
    tiles = dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, GROUP_M=group_m, num_warps=warps,
                 num_stages=stages, PRECISION="ieee" if x.dtype == torch.float32 else "tf32",  # 16-bit: no tf32
                 FORMAT=fmt, GROUP_K=group, FP8_ACTIVATIONS=fp8_activations, NATIVE_E4M3=converts_to_e4m3(x),
                 FP8_FAST_ACCUM=fp8_activations and bool(config.get("fp8_fast_accum", False)))
    factor = DECODED_FACTOR.get(fmt, 1.0)
    sorted_picks, block_expert, num_blocks = _align(topk_ids.reshape(-1), num_experts, block_m)
    routed = (sorted_picks, block_expert, picks, num_experts, num_blocks, hidden, features)

    (w_gate_up, gate_up_strides, gate_up_scale), (w_down, down_strides, down_scale) = gate_up, down
    # with FP8 activations every row is quantized, unused blocks' too (their count is not known on the host;
    # their codes are never read): zeros on the CPU, where the interpreter would warn of garbage floats
    empty = torch.zeros if fp8_activations and not x.is_cuda else torch.empty
    activated = empty((num_blocks * block_m, features), dtype=x.dtype, device=x.device)
    x_in, x_scale, amax = x, x, x  # the last two: placeholders, read only with fp8_activations
    if fp8_activations:
        x_codes, x_scale = quantize_per_tensor(x)
        x_in, amax = x_codes.view(torch.uint8), torch.zeros((), dtype=torch.float32, device=x.device)
    _gate_up_kernel[(num_blocks * triton.cdiv(features, block_n),)](
        x_in, w_gate_up, activated, *routed, x_in.stride(0), x_in.stride(1), *gate_up_strides,
        gate_up_scale if gate_up_scale is not None else x, factor, gate_up_scale.shape[-1] if group else 0,
        plane_bytes_of(fmt, hidden), x_scale, amax, TOP_K=top_k, ACTIVATION=code, **tiles)
    h_codes, h_scale = activated, x
    if fp8_activations:
        h_codes, h_scale = quantize_with_amax(activated, amax)
        h_codes = h_codes.view(torch.uint8)
    per_pick = torch.empty((picks, hidden), dtype=torch.float32, device=x.device)
    _down_kernel[(num_blocks * triton.cdiv(hidden, block_n),)](
        activated, w_down, per_pick, topk_weights.reshape(-1), *routed, *down_strides,
        down_scale if down_scale is not None else x, factor, down_scale.shape[-1] if group else 0,
        plane_bytes_of(fmt, features), h_codes, h_scale, **tiles)
    return per_pick.view(tokens, top_k, hidden).sum(dim=1).to(x.dtype)
