"""The fused ``rms_norm_linear`` / ``rms_norm_quant_linear`` ops (``mii_core/model/ops.py``): the GEMV adding the
residual, normalising x and multiplying it as it reads it.

The yardstick is the two Triton ops one after the other (``rms_norm``, then ``linear`` / ``quant_linear``). The
sum x + residual must come out the very same bits (it is rounded alike). The normalised values are rounded alike
too, but each program sums the row's squares in its own order, so 1 / rms may differ in its last float32 bit and
a normalised value then land one rounding step of x's dtype apart: the outputs are held to that, far inside what
a missing weight, residual or epsilon would move them (checked here too). Under the interpreter at small shapes
(float32, float16), every GEMV config and token count 1..8; where the GEMV does not apply the op answers
``NotImplemented``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from mii_core.model.quantization import quantize_weight

pytest.importorskip("triton", reason="triton comes with mii-kernels on Linux only")
from mii_kernels.triton import linear as triton_linear  # noqa: E402
from mii_kernels.triton import norms  # noqa: E402
from mii_kernels.triton.quant_linear import TritonNormQuantLinear, TritonQuantLinear  # noqa: E402
from test_triton_ops import DEVICE, randn  # noqa: E402

FEATURES, OUT, EPS = 320, 48, 1e-5  # K = 320: not a multiple of the 256- and 1,024-wide tiles (FP6 needs 64s)
# one rounding step of a normalised value of about 1 (float16: 2^-10), times a weight of about K^-0.5, a few times
BOUND = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float16: dict(rtol=2e-3, atol=4e-3),
         torch.bfloat16: dict(rtol=1.6e-2, atol=3e-2)}


@pytest.fixture(autouse=True)
def _fold_on(monkeypatch):
    """The fused ops fold only under ``MII_TRITON_NORM_FOLD=1`` (off by default: measured slower on the H200)."""
    monkeypatch.setenv(triton_linear.NORM_FOLD_ENV, "1")


def operands(tokens, dtype, residual=True, seed=0):
    x = randn(tokens, FEATURES, dtype=dtype, seed=seed) * 2
    res = randn(tokens, FEATURES, dtype=dtype, seed=seed + 1) if residual else None
    gain = (torch.rand(FEATURES, generator=torch.Generator().manual_seed(seed)) + 0.5).to(x.device, dtype)
    return x, res, gain


def apart(x, residual, gain):
    """The two ops' (normed, summed)."""
    if residual is None:
        return norms.rms_norm(x, gain, EPS), x
    return norms.rms_norm(x, gain, EPS, residual)


@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("config", ["default", "gemv", "reduce", "dot", "group_k1024"])  # every mode
@pytest.mark.parametrize("tokens", [1, 2, 3, 8])
def test_rms_norm_linear_equals_the_two_ops(config, tokens, dtype, residual):
    x, res, gain = operands(tokens, dtype, residual)
    weight = randn(OUT, FEATURES, dtype=dtype, scale=FEATURES ** -0.5, seed=3)
    bias = randn(OUT, dtype=dtype, seed=4)
    tiles = triton_linear.launch_config(config)
    fused, summed = triton_linear.rms_norm_linear(x, res, gain, EPS, weight, bias, tiles)
    normed, want_summed = apart(x, res, gain)
    assert torch.equal(summed, want_summed)
    torch.testing.assert_close(fused, triton_linear.linear(normed, weight, bias, tiles), **BOUND[dtype])


@pytest.mark.parametrize("mode", ["fp8", "wf8af16", "wf6af16"])
@pytest.mark.parametrize("config", ["default", "fp6", "staged"])
@pytest.mark.parametrize("tokens", [1, 2, 5])
def test_rms_norm_quant_linear_equals_the_two_ops(mode, config, tokens):
    x, res, gain = operands(tokens, torch.float16, seed=5)
    weight = quantize_weight(randn(OUT, FEATURES, scale=FEATURES ** -0.5, seed=6), mode)
    op = TritonQuantLinear(config, config)
    fused, summed = TritonNormQuantLinear(config, config)(x, res, gain, EPS, weight, None)
    normed, want_summed = apart(x, res, gain)
    assert torch.equal(summed, want_summed)
    torch.testing.assert_close(fused, op(normed, weight, None), **BOUND[torch.float16])


def test_the_bound_catches_a_wrong_norm():
    """What the comparisons above would see of a fold that dropped the weight, the residual or epsilon."""
    x, res, gain = operands(2, torch.float32)
    weight = randn(OUT, FEATURES, scale=FEATURES ** -0.5, seed=3)
    fused, _ = triton_linear.rms_norm_linear(x, res, gain, 0.5, weight, None)  # another epsilon
    normed, _ = apart(x, res, gain)
    assert not torch.allclose(fused, triton_linear.linear(normed, weight, None), **BOUND[torch.float32])
    for wrong in (norms.rms_norm(x, gain, EPS, res)[0] / gain, norms.rms_norm(x, gain, EPS)):
        assert not torch.allclose(triton_linear.linear(wrong, weight, None), triton_linear.linear(normed, weight, None),
                                  **BOUND[torch.float32])


def test_where_the_gemv_does_not_apply_the_op_says_not_implemented():
    weight = randn(OUT, FEATURES, seed=7)
    x, res, gain = operands(triton_linear.GEMV_MAX_TOKENS + 1, torch.float32)
    assert triton_linear.rms_norm_linear(x, res, gain, EPS, weight, None) is NotImplemented
    x, res, gain = operands(2, torch.float32)
    strided = randn(2, 2 * FEATURES, seed=8)[:, ::2]  # the residual strided otherwise than x
    assert triton_linear.rms_norm_linear(x, strided, gain, EPS, weight, None) is NotImplemented
    assert triton_linear.rms_norm_linear(x, res, gain.double(), EPS, weight, None) is NotImplemented
    quantized = quantize_weight(weight, "fp8")
    many, many_res, _ = operands(triton_linear.GEMV_MAX_TOKENS + 1, torch.float32)
    assert TritonNormQuantLinear()(many, many_res, gain, EPS, quantized, None) is NotImplemented


TRITON_OPS = {"rms_norm": "mii_kernels.triton.norms:rms_norm", "linear": "mii_kernels.triton.linear:TritonLinear",
              "quant_linear": "mii_kernels.triton.quant_linear:TritonQuantLinear"}
FUSED = {"rms_norm_linear": "mii_kernels.triton.linear:TritonNormLinear",
         "rms_norm_quant_linear": "mii_kernels.triton.quant_linear:TritonNormQuantLinear"}


@pytest.mark.parametrize("mode", [None, "fp8", "wf6af16"])
def test_a_layer_through_the_fused_ops_matches_it_through_the_two(mode):
    """A decoder layer whose norms and linears are the Triton ops (the rest the reference), with and without
    the fused ones: it defers its norms only with them, and returns the same residual stream and an output
    within the bound, over a decode-sized step (3 tokens) after a residual."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from support.kernel_sets import kernel_set
    from test_norm_fold import layer, run

    folded = layer(kernel_set(**TRITON_OPS, **FUSED), mode, device=DEVICE)
    apart_layer = layer(kernel_set(**TRITON_OPS), mode, device=DEVICE)
    assert folded.defers == (True, True) and apart_layer.defers == (False, False)
    (out, residual), (want, want_residual) = run(folded, 3, True, DEVICE), run(apart_layer, 3, True, DEVICE)
    assert torch.equal(residual, want_residual)
    torch.testing.assert_close(out, want, **BOUND[torch.float32])


def test_the_environment_turns_the_fold_off_for_a_kernel_set_made_after(monkeypatch):
    """``MII_TRITON_NORM_FOLD=0``: both ops decline every call (the norm then runs by itself), for a benchmark
    to time both ways in one run; anything but 0 or 1 is refused."""
    x, res, gain = operands(1, torch.float32)
    weight = randn(OUT, FEATURES, seed=7)
    monkeypatch.delenv(triton_linear.NORM_FOLD_ENV)
    assert triton_linear.TritonNormLinear()(x, res, gain, EPS, weight, None) is NotImplemented  # off by default
    monkeypatch.setenv(triton_linear.NORM_FOLD_ENV, "0")
    assert triton_linear.TritonNormLinear()(x, res, gain, EPS, weight, None) is NotImplemented
    assert TritonNormQuantLinear()(x, res, gain, EPS, quantize_weight(weight, "fp8"), None) is NotImplemented
    monkeypatch.setenv(triton_linear.NORM_FOLD_ENV, "1")
    assert triton_linear.TritonNormLinear()(x, res, gain, EPS, weight, None) is not NotImplemented
    monkeypatch.setenv(triton_linear.NORM_FOLD_ENV, "off")
    with pytest.raises(ValueError, match="MII_TRITON_NORM_FOLD must be 0 or 1"):
        triton_linear.TritonNormLinear()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="real shapes compiled on a GPU only")
@pytest.mark.parametrize("mode", [None, "fp8", "wf6af16"])
@pytest.mark.parametrize("tokens", [1, 2, 8])
def test_llama_qkv_projection_at_real_shape(mode, tokens):
    """Llama-3-8B's q/k/v projection (4,096 → 6,144), bf16, through the default tiles."""
    features, out = 4096, 6144
    x = randn(tokens, features, dtype=torch.bfloat16, seed=9) * 2
    res = randn(tokens, features, dtype=torch.bfloat16, seed=10)
    gain = (randn(features, seed=11).abs() + 0.5).to(torch.bfloat16)
    dense = randn(out, features, scale=features ** -0.5, seed=12)
    normed, want_summed = norms.rms_norm(x, gain, EPS, res)
    if mode is None:
        weight = dense.to(torch.bfloat16)
        fused, summed = triton_linear.rms_norm_linear(x, res, gain, EPS, weight, None)
        want = triton_linear.linear(normed, weight, None)
    else:
        weight = quantize_weight(dense, mode)
        fused, summed = TritonNormQuantLinear()(x, res, gain, EPS, weight, None)
        want = TritonQuantLinear()(normed, weight, None)
    assert torch.equal(summed, want_summed)
    torch.testing.assert_close(fused, want, **BOUND[torch.bfloat16])
