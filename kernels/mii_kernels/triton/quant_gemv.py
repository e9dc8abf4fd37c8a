"""Quantized GEMV for the few-token steps of decode: the bf16 GEMV's tiles (triton/linear.py) over FP8/FP6 codes.

At batch 1 a decode step reads every weight once, so a quantized weight (1 byte, or 6 bits, against bf16's 2)
only pays if the read runs as close to the memory bandwidth as the bf16 GEMV's does. The first weight-only
kernel (quant_linear.py) multiplied with ``tl.dot`` on a [BLOCK_K, BLOCK_N] tile with the tokens padded to 16
rows: on the H200 its Llama-3-8B decode step (W2) took 5.56 ms against bf16's 4.42. This path runs
the bf16 GEMV's own kernel (linear.py, ``FORMAT`` set): ``BLOCK_N`` weight rows per program, their ``K``
columns in chunks of ``BLOCK_K`` (contiguous bytes, so the loads vectorise), decoded in registers
(quant_decode.py) and summed in float32, in the same modes (lanes, reduce, dot), with tiles of its own.

Each output column is then scaled by its row's scale (times the decoding factor) and the bias added, in
float32, rounded once to x's dtype, as the reference does. Checkpoints with a scale per group of columns take
quant_linear.py's grouped kernel. Nothing is read on the host: the step can be captured in a CUDA graph.

FP6 runs here too since its codes are stored in bit planes (mii_core.model.quant_formats): a chunk is three
contiguous byte tiles, four quarters of codes decoded by shifts and masks. With the earlier bit stream (two
byte loads at computed offsets per code) this GEMV ran 1.2-5x slower than the tl.dot kernel on the H200, so FP6
stayed there; the bit-plane GEMV's speed is not measured yet. FP6 picks its tiles apart from FP8 (env
MII_TRITON_QUANT_GEMV_FP6_CONFIG, a name from the same ``CONFIGS``): a chunk of its codes is 3/4 of the bytes and
more integer work per weight, so its fastest tiles may differ.
"""
from __future__ import annotations

import torch

from mii_core.model.quantization import QuantizedWeight
from mii_kernels.triton.configs import pick_config
from mii_kernels.triton.linear import GEMV_MAX_TOKENS, NormIn, launch_gemv, make_tile, tile_for, tiles_over
from mii_kernels.triton.quant_decode import DECODED_FACTOR, weight_format

QUANT_GEMV_MAX_TOKENS = GEMV_MAX_TOKENS
CONFIG_ENV, FP6_CONFIG_ENV = "MII_TRITON_QUANT_GEMV_CONFIG", "MII_TRITON_QUANT_GEMV_FP6_CONFIG"
_FEW = (2, 4, 8)
# Launch settings by name (env MII_TRITON_QUANT_GEMV_CONFIG for FP8, MII_TRITON_QUANT_GEMV_FP6_CONFIG for FP6, read
# when a kernel set builds its op), compared in one run by benchmarks/kernel_bench_quant.py. A weight byte here
# holds one FP8 weight: the bf16 GEMV's tiles read half the bytes per chunk, so wider chunks are candidates too.
# ``block_k`` counts codes, a multiple of 64 (FP6 reads whole blocks of its planes).
# T = 2..8 of the default and of the configs below that differ from it at T = 1 only
_FEW_TILES = {2: make_tile("reduce", 8, 1024, stages=3), **{t: make_tile("dot", 32, 256, stages=4) for t in (4, 8)}}
CONFIGS: dict[str, dict[int, dict]] = {
    # the fastest FP8 tiles per T on the H200 (kernel_bench_quant.py): T = 1 "group"'s 8 x 2048 since 2026-12-03
    # (the Llama-3-8B chain in 2.10 ms, 3.57 TB/s of codes, against the lanes tile's 2.43 and bf16's 3.75; 64
    # registers a thread against 123), T = 2 "staged"'s since 2026-12-03 (3.32 ms against the dot tile's 3.92),
    # T = 4, 8 the dot tile's since 2026-12-02 (not compared since)
    "default": {1: make_tile("group", 8, 2048), **_FEW_TILES},
    # the T = 1 default until 2026-12-03 (a lanes tile: [8, 1024] float32 partial sums, 123 registers a thread)
    "lanes_k1024": {1: make_tile("lanes", 8, 1024), **_FEW_TILES},
    "fp6": {1: make_tile("lanes", 8, 2048), **_FEW_TILES},
    "k2048": {1: make_tile("lanes", 8, 2048), **{t: make_tile("dot", 32, 256, stages=4) for t in _FEW}},
    "bf16_tiles": {1: make_tile("lanes", 8, 1024), **{t: make_tile("dot", 32, 128, stages=5) for t in _FEW}},
    "lanes_n16": {1: make_tile("lanes", 16, 1024), **{t: make_tile("reduce", 16, 512) for t in _FEW}},
    "lanes_n4": {1: make_tile("lanes", 4, 4096), **{t: make_tile("reduce", 8, 1024) for t in _FEW}},
    "staged": {1: make_tile("lanes", 8, 2048, stages=3), **{t: make_tile("reduce", 8, 1024, stages=3) for t in _FEW}},
    "w8": {1: make_tile("lanes", 16, 2048, warps=8), **{t: make_tile("dot", 64, 256, warps=8, stages=4) for t in _FEW}},
    "dot_n16": {t: make_tile("dot", 16, 512, stages=3) for t in (1, *_FEW)},
    # every T on the tensor cores, T = 1 padded to 16 rows like T = 2..8: since the activations join the decoded
    # codes as float16 (quant_decode.dot_operands) a code costs one half of an unpack instruction there, where the
    # lanes tile converts each to float32 for its FMA (sm_90 SASS, 2026-12-03); not measured yet
    "dot_all": {t: make_tile("dot", 32, 256, stages=4) for t in (1, *_FEW)},
    "dot_all_k512": {t: make_tile("dot", 32, 512, stages=3) for t in (1, *_FEW)},
    # batch 1 with products summed in runs of 16 in their thread (linear.py's "group" mode), beside the default's
    # 8 x 2048: on the H200, 2026-12-03, 2.21 ms (8 x 4096) and 2.29 (16 x 2048) for FP8; for FP6 (whose lanes
    # tile of 8 x 2048 takes 174 registers a thread, "group" 128) the default's tile 3.62 ms against "fp6"'s 3.58
    "group_k4096": {1: make_tile("group", 8, 4096), **_FEW_TILES},
    "group_n16_k2048": {1: make_tile("group", 16, 2048, warps=8), **_FEW_TILES},
    # FP6 candidates, not measured yet: a lanes tile of BLOCK_K codes keeps [BLOCK_N, BLOCK_K / 4] partial sums
    # (a quarter of FP8's registers), so longer chunks fit; dot tiles multiply four quarters of BLOCK_K / 4
    "k4096": {1: make_tile("lanes", 8, 4096), **{t: make_tile("dot", 32, 512, stages=3) for t in _FEW}},
    "n16_k2048": {1: make_tile("lanes", 16, 2048), **{t: make_tile("dot", 16, 1024, stages=3) for t in _FEW}},
}


def launch_config(config: str | dict | None = None, env_var: str = CONFIG_ENV) -> dict[int, dict]:
    """A name from ``CONFIGS``, or the tiles of some token counts over the format's default; None reads
    ``env_var``: ``CONFIG_ENV`` for FP8's tiles (default ``"default"``), ``FP6_CONFIG_ENV`` for FP6's
    (default ``"fp6"``)."""
    default = "fp6" if env_var == FP6_CONFIG_ENV else "default"
    return pick_config(config, CONFIGS, env_var, "quantized GEMV",
                       lambda tiles: tiles_over(tiles, CONFIGS[default], "quantized GEMV"), default)


def gemv_applies(tokens: int, weight: QuantizedWeight) -> bool:
    """A few tokens and a scale per output row (not per group of columns), FP8 or FP6 codes."""
    return 0 < tokens <= QUANT_GEMV_MAX_TOKENS and weight.group_size is None


def quant_gemv(x: torch.Tensor, weight: QuantizedWeight, bias: torch.Tensor | None,
               tiles: dict[int, dict], activation: str | None = None, norm: NormIn | None = None,
               fp6_ptx: bool = False) -> torch.Tensor:
    """x [..., K] (at most QUANT_GEMV_MAX_TOKENS rows) times the decoded weight [N, K]ᵀ, scaled, + bias; with
    ``activation``, x [..., 2K] is [gate | up] and act(gate) · up is multiplied (``gated_quant_linear``); with
    ``norm``, rms_norm(x [+ residual]) (``rms_norm_quant_linear``); ``fp6_ptx``: as ``launch_gemv``'s."""
    rows = x.reshape(-1, x.shape[-1])
    out = torch.empty((rows.shape[0], weight.shape[0]), dtype=x.dtype, device=x.device)
    fmt = weight_format(weight.mode, x.device)
    launch_gemv(rows, weight.data.view(torch.uint8), bias, out, tile_for(rows.shape[0], tiles), fmt, weight.scale,
                DECODED_FACTOR[fmt], features_in=weight.shape[1], activation=activation, norm=norm,
                fp6_ptx=fp6_ptx)
    return out.view(*x.shape[:-1], weight.shape[0])
