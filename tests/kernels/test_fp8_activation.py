"""The FP8 GEMM path's activation quantization (``mii_kernels.triton.fp8_activation``) against PyTorch's:
scale = absmax / 448 and codes = the float8_e4m3fn cast of x · (1/scale) (quant_formats), byte for byte."""
from __future__ import annotations

import pytest
import torch

from mii_core.model import quant_formats as fmt

pytest.importorskip("triton", reason="triton comes with mii-kernels on Linux only")
from mii_kernels.triton.fp8_activation import quantize_per_tensor  # noqa: E402
from test_triton_ops import CUDA, DEVICE, randn  # noqa: E402

DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if CUDA else [])


def _reference(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch's codes and scale, computed on the CPU: CUDA's PyTorch divides by a scalar through its
    reciprocal, one unit in the last place off a correctly rounded quotient at times (the H200 run of
    2026-12-03: bf16 cases' scales a bit apart), and the kernel divides correctly rounded as the CPU does."""
    cpu_rows = rows.cpu()
    scale = fmt.tensor_scale(cpu_rows)
    return fmt.activation_codes(cpu_rows, scale).to(rows.device), scale.to(rows.device)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens, columns", [(9, 64), (3, 1500), (40, 24)] + ([(8192, 4096)] if CUDA else []))
def test_codes_and_scale_equal_pytorchs(dtype, tokens, columns):
    rows = randn(tokens, columns + 6, dtype=dtype, scale=3.0)[:, 2:2 + columns]  # a strided view
    codes, scale = quantize_per_tensor(rows)
    want_codes, want_scale = _reference(rows)
    assert codes.dtype == torch.float8_e4m3fn and codes.shape == rows.shape
    assert torch.equal(scale, want_scale)
    assert torch.equal(codes.view(torch.uint8), want_codes.view(torch.uint8))


def test_ties_subnormals_saturation_and_zeros_by_hand():
    # scale = 448 / 448 = 1: 1.0625 lies halfway between e4m3's 1.0 and 1.125 (ties to even: 1.0); 2^-9 · 1.5
    # halfway between the subnormals 2^-9 and 2^-8 (to even: 2^-8); -448 the largest magnitude
    rows = torch.tensor([[1.0625, 1.5 * 2.0 ** -9, -448.0, 0.0]], device=DEVICE)
    codes, scale = quantize_per_tensor(rows)
    assert scale.item() == 1.0
    assert codes.float().tolist() == [[1.0, 2.0 ** -8, -448.0, 0.0]]
    zero_codes, zero_scale = quantize_per_tensor(torch.zeros(2, 5, device=DEVICE))
    assert zero_scale.item() == 1.0 and not zero_codes.float().any()


@pytest.mark.parametrize("largest_column", [33, 1400])
@pytest.mark.parametrize("largest_row", [0, 5, 8, 13, 18])
def test_absmax_of_rows_shared_over_fewer_programs(monkeypatch, largest_row, largest_column):
    """Four absmax programs over nineteen rows of 1,500 columns: two column blocks of 1,024, each read by two
    programs of four rows a turn (program 0 of a block takes rows 0-3, 8-11 and 16-18, reading row 18 again in
    place of a 20th, program 1 rows 4-7 and 12-15); wherever the largest |x| lies, the scale and codes are
    PyTorch's."""
    from mii_kernels.triton import fp8_activation

    monkeypatch.setattr(fp8_activation, "_AMAX_PROGRAMS", 4)
    assert fp8_activation._AMAX_ROWS == 4 and fp8_activation._BLOCK == 1024
    rows = randn(19, 1500, scale=1.0)
    rows[largest_row, largest_column] = -50.0
    codes, scale = quantize_per_tensor(rows)
    want_codes, want_scale = _reference(rows)
    assert scale.item() == (torch.tensor(50.0) / 448).item() and torch.equal(scale, want_scale)
    assert torch.equal(codes.view(torch.uint8), want_codes.view(torch.uint8))
