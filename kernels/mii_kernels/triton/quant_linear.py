"""Quantized linear for CUDA (contract: ``quant_linear`` in mii_core/model/ops.py).

Three paths:
* steps of at most 8 tokens with a scale per output row: quant_gemv.py's GEMV (the bf16 GEMV's tiles; FP8 and
  FP6 each with tiles of their own);
* weight-only (every mode; "fp8" in steps of at most ``FP8_WEIGHT_ONLY_MAX_TOKENS`` tokens, or on a GPU
  without FP8 GEMMs): ``_weight_only_kernel`` reads the codes (1 byte or 6 bits per weight), decodes them
  in registers (quant_decode.py), multiplies with ``tl.dot`` (tokens padded to 16 rows; FP6 one ``tl.dot``
  per quarter of a chunk's codes) into float32, then scales each output column and adds the bias: the
  weights are read once per step, so at batch 1 the step is bound by half (FP8) or 3/8 (FP6) of bf16's bytes.
* "fp8" with more tokens on sm_89+ (Ada, Hopper): x quantized per tensor (one scale, amax/448, on the
  device: no host sync; fp8_activation.py) and ``torch._scaled_mm`` on the FP8 tensor cores with per-tensor scales (the
  issue's measurement: row-wise scales were slower than bf16); the per-output-channel weight scale is a
  column multiply on its float32 output, then the bias, rounded once to x's dtype.
A GPU below sm_89 runs "fp8" weight-only and says so once in the log (more precise, never wrong).
Shipped block-wise FP8 weights (a scale per row and ``group_size`` input columns, from a checkpoint stored
quantized) run the weight-only kernel with ``GROUP_K`` set: BLOCK_K divides the group, so each K tile's
partial sums lie in one group and are scaled by it before joining the accumulator. A group size the kernel
cannot tile (not a power of two, or below tl.dot's 16) takes ``grouped_scale_linear``: the weight
dequantized, multiplied in float32 (correct, slower).
"""
from __future__ import annotations

import logging

import torch
import triton
import triton.language as tl

from mii_core.model.quantization import FP8_WEIGHT_ONLY_MAX_TOKENS, QuantizedWeight
from mii_kernels.triton.fp8_activation import quantize_per_tensor, quantize_with_amax
from mii_kernels.triton.quant_decode import (DECODED_FACTOR, FORMAT_E3M2, dot_operands, fp6_dot_chunk,
                                             load_decoded, plane_bytes_of, weight_format)
from mii_kernels.triton.linear import NormIn, decodes_fp6_by_ptx, folds_norms, norm_input, norm_outputs
from mii_kernels.triton.pdl import pdl_launch, pdl_wait
from mii_kernels.triton.quant_gemv import FP6_CONFIG_ENV, gemv_applies, launch_config, quant_gemv

log = logging.getLogger(__name__)
FP8_GEMM_CAPABILITY = (8, 9)
_FP6 = tl.constexpr(FORMAT_E3M2)


@triton.jit(do_not_specialize=["tokens"])
def _weight_only_kernel(x_ptr, w_ptr, scale_ptr, bias_ptr, out_ptr, tokens, features_out, features_in,
                        stride_xt, stride_xk, stride_wn, factor, scale_columns, plane_bytes, HAS_BIAS: tl.constexpr,
                        FORMAT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                        PRECISION: tl.constexpr, GROUP_K: tl.constexpr, PDL: tl.constexpr):
    pdl_wait(PDL)
    toks = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    in_t, in_n = toks < tokens, rows < features_out
    w_rows = w_ptr + rows.to(tl.int64)[None, :] * stride_wn  # [1, BLOCK_N]: the tile is [BLOCK_K, BLOCK_N]
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    x_rows = x_ptr + toks.to(tl.int64)[:, None] * stride_xt
    for start in range(0, features_in, BLOCK_K):
        if FORMAT == _FP6:  # BLOCK_K codes as four quarters of BLOCK_K / 4 (quant_decode.py): four products
            acc = fp6_dot_chunk(acc, x_rows, stride_xk, in_t, w_rows, in_n, start, features_in, plane_bytes, BLOCK_K,
                                PRECISION)
        else:
            cols = start + tl.arange(0, BLOCK_K)
            in_k = cols < features_in
            x = tl.load(x_rows + cols[None, :] * stride_xk, mask=in_t[:, None] & in_k[None, :], other=0.0)
            codes = load_decoded(w_rows, cols[:, None], in_k[:, None] & in_n[None, :], FORMAT)
            x, w = dot_operands(x, codes)
            if GROUP_K == 0:
                acc = tl.dot(x, w, acc, input_precision=PRECISION)
            else:  # the tile lies in one column group: its sums take the group's scale of each row
                group_scale = tl.load(scale_ptr + rows * scale_columns + start // GROUP_K, mask=in_n, other=0.0)
                acc += tl.dot(x, w, input_precision=PRECISION) * group_scale[None, :]
    if GROUP_K == 0:
        result = acc * (tl.load(scale_ptr + rows, mask=in_n, other=0.0) * factor)[None, :]
    else:
        result = acc * factor
    if HAS_BIAS:
        result += tl.load(bias_ptr + rows, mask=in_n, other=0.0).to(tl.float32)[None, :]
    out = out_ptr + toks.to(tl.int64)[:, None] * features_out + rows[None, :]
    tl.store(out, result.to(out_ptr.dtype.element_ty), mask=in_t[:, None] & in_n[None, :])


def weight_only_linear(x: torch.Tensor, weight: QuantizedWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., K] times the decoded weight [N, K]ᵀ, float32 sums, scaled per column, + bias, in x's dtype."""
    rows = x.reshape(-1, x.shape[-1])
    tokens, (features_out, features_in) = rows.shape[0], weight.shape
    out = torch.empty((tokens, features_out), dtype=x.dtype, device=x.device)
    if tokens == 0:
        return out.view(*x.shape[:-1], features_out)
    block_m = 16 if tokens <= 16 else 64  # tl.dot needs 16 rows; few tokens: a GEMV in all but name
    block_n, block_k = (32, 128) if tokens <= 16 else (64, 64)
    group = weight.group_size or 0
    if group:
        if group < 16 or group & (group - 1):
            return grouped_scale_linear(x, weight, bias)
        block_k = min(block_k, group)
    fmt = weight_format(weight.mode, x.device)
    grid = (triton.cdiv(features_out, block_n), triton.cdiv(tokens, block_m))
    _weight_only_kernel[grid](
        rows, weight.data.view(torch.uint8), weight.scale, bias if bias is not None else weight.scale, out,
        tokens, features_out, features_in, rows.stride(0), rows.stride(1), weight.data.stride(0),
        DECODED_FACTOR[fmt], weight.scale.shape[-1] if group else 0,
        plane_bytes_of(fmt, features_in), HAS_BIAS=bias is not None, FORMAT=fmt,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, PRECISION="ieee" if x.dtype == torch.float32 else "tf32",
        GROUP_K=group, num_warps=4, **pdl_launch(rows))
    return out.view(*x.shape[:-1], features_out)


def fp8_gemm_linear(x: torch.Tensor, weight: QuantizedWeight, bias: torch.Tensor | None = None,
                    x_amax: torch.Tensor | None = None) -> torch.Tensor:
    """x quantized per tensor (its max |x| read from x, or ``x_amax`` where a producer joined it),
    ``torch._scaled_mm`` on e4m3: with a per-tensor weight scale one call (both scales and the bias in
    cuBLAS's epilogue, x's dtype out); with row scales float32 out, × row scales, + bias, rounded once."""
    rows = x.reshape(-1, x.shape[-1])
    codes, x_scale = quantize_per_tensor(rows) if x_amax is None else quantize_with_amax(rows, x_amax)
    # cuBLAS takes a bias in its epilogue only for a 16-bit output (float32 x: the bias added after, in float32)
    in_epilogue = bias is not None and x.dtype != torch.float32 and bias.dtype == x.dtype
    if weight.per_tensor and (bias is None or in_epilogue or x.dtype == torch.float32):
        product = torch._scaled_mm(codes, weight.data.t(), scale_a=x_scale, scale_b=weight.scale[0],
                                   bias=bias if in_epilogue else None, out_dtype=x.dtype)
        if bias is not None and not in_epilogue:
            product = product + bias
        return product.view(*x.shape[:-1], weight.shape[0])
    product = torch._scaled_mm(codes, weight.data.t(), scale_a=x_scale,
                               scale_b=torch.ones((), dtype=torch.float32, device=x.device),
                               out_dtype=torch.float32)
    product = product * weight.scale
    if bias is not None:
        product = product + bias.float()
    return product.to(x.dtype).view(*x.shape[:-1], weight.shape[0])


def grouped_scale_linear(x: torch.Tensor, weight: QuantizedWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x times a weight with a scale per row and group of columns, dequantized: all in float32 (as the
    reference; a weight rounded to x's 16-bit dtype first would not be), rounded once to x's dtype."""
    out = torch.nn.functional.linear(x.float(), weight.dequantize(torch.float32), None if bias is None else bias.float())
    return out.to(x.dtype)


class TritonQuantLinear:
    """The ``quant_linear`` op (registered as a class: one per kernel set, remembering which devices it
    has logged a fallback for). It takes a producer's ``x_amax`` for the FP8 GEMM path's scale; the GEMV and
    weight-only paths keep x as it is and need none."""

    takes_x_amax = True

    def __init__(self, gemv_config: str | dict | None = None, fp6_gemv_config: str | dict | None = None) -> None:
        self._capability: dict[int, tuple[int, int]] = {}
        self.gemv_tiles = launch_config(gemv_config)
        self.fp6_gemv_tiles = launch_config(fp6_gemv_config, FP6_CONFIG_ENV)
        self.fp6_ptx = decodes_fp6_by_ptx()

    def __call__(self, x: torch.Tensor, weight: QuantizedWeight, bias: torch.Tensor | None = None,
                 x_amax: torch.Tensor | None = None) -> torch.Tensor:
        tokens = x.numel() // x.shape[-1] if x.shape[-1] else 0
        if gemv_applies(tokens, weight):
            return self._gemv(x, weight, bias)
        if weight.quantizes_activations_at(tokens) and self._fp8_gemm_fits(x, weight):
            return fp8_gemm_linear(x, weight, bias, x_amax)
        return weight_only_linear(x, weight, bias)

    def gated(self, x: torch.Tensor, weight: QuantizedWeight, bias: torch.Tensor | None, activation: str):
        """``quant_linear(gated_activation(x, activation), weight, bias)`` through the GEMV reading [gate | up]
        where the GEMV applies; ``NotImplemented`` elsewhere, for the kernel set to compose the two ops."""
        tokens = x.numel() // x.shape[-1] if x.shape[-1] else 0
        if x.shape[-1] != 2 * weight.shape[1] or not gemv_applies(tokens, weight):
            return NotImplemented
        return self._gemv(x, weight, bias, activation)

    def normed(self, x: torch.Tensor, residual: torch.Tensor | None, norm_weight: torch.Tensor, eps: float,
               weight: QuantizedWeight, bias: torch.Tensor | None):
        """(``quant_linear(rms_norm(x, norm_weight, eps, residual), weight, bias)``, x + residual) through the
        GEMV normalising x as it reads it where the GEMV applies; ``NotImplemented`` elsewhere."""
        prepared = norm_input(x, residual, norm_weight, eps)
        if prepared is None or x.shape[-1] != weight.shape[1] or not gemv_applies(prepared[0].shape[0], weight):
            return NotImplemented
        rows, norm = prepared
        return norm_outputs(self._gemv(rows, weight, bias, norm=norm), x, norm)

    def _gemv(self, x: torch.Tensor, weight: QuantizedWeight, bias: torch.Tensor | None,
              activation: str | None = None, norm: NormIn | None = None) -> torch.Tensor:
        """The quantized GEMV with this op's tiles for the weight's format (and its FP6 decode)."""
        tiles = self.fp6_gemv_tiles if weight.mode == "wf6af16" else self.gemv_tiles
        return quant_gemv(x, weight, bias, tiles, activation, norm, self.fp6_ptx)

    def _fp8_gemm_fits(self, x: torch.Tensor, weight: QuantizedWeight) -> bool:
        """sm_89+ and the shapes _scaled_mm takes (K and N multiples of 16); else weight-only, logged once."""
        index = x.device.index if x.device.index is not None else torch.cuda.current_device()
        if index not in self._capability:
            self._capability[index] = torch.cuda.get_device_capability(index)
            if self._capability[index] < FP8_GEMM_CAPABILITY:
                log.warning("quantization_mode 'fp8': %s (sm_%d%d) has no FP8 GEMMs; running the weight-only "
                            "FP8 path (activations stay in %s)", torch.cuda.get_device_name(index),
                            *self._capability[index], x.dtype)
        n, k = weight.shape
        return self._capability[index] >= FP8_GEMM_CAPABILITY and n % 16 == 0 and k % 16 == 0


class TritonNormQuantLinear(TritonQuantLinear):
    """The ``rms_norm_quant_linear`` op (``TritonQuantLinear.normed``, with the same tiles); declines every call
    under ``MII_TRITON_NORM_FOLD=0``, as ``rms_norm_linear``."""

    def __init__(self, gemv_config: str | dict | None = None, fp6_gemv_config: str | dict | None = None) -> None:
        super().__init__(gemv_config, fp6_gemv_config)
        self.folds = folds_norms()

    def __call__(self, x: torch.Tensor, residual: torch.Tensor | None, norm_weight: torch.Tensor, eps: float,
                 weight: QuantizedWeight, bias: torch.Tensor | None):
        if not self.folds:
            return NotImplemented
        return self.normed(x, residual, norm_weight, eps, weight, bias)


class TritonGatedQuantLinear(TritonQuantLinear):
    """The ``gated_quant_linear`` op (``TritonQuantLinear.gated``, with the same tiles)."""

    def __call__(self, x: torch.Tensor, weight: QuantizedWeight, bias: torch.Tensor | None, activation: str):
        return self.gated(x, weight, bias, activation)
