"""The Triton experts on quantized stacks (``mii_kernels.triton.moe.quant_moe_experts``) against the PyTorch
reference (``mii_kernels.torch_ref.quant_linear.quant_moe_experts``, float32 on the dequantized weights).

Without CUDA under the Triton interpreter at small shapes (float32, float16); with CUDA also bfloat16 at
Mixtral's shapes (1, 256 and 4,096 tokens: the 16-, 32- and 64-row tiles, the last on Hopper's FP8 warp-group
MMA). The reference rounds once at the end, the kernel where the bf16 experts round (gate/up and the down
output): 16-bit cases are held to a relative error, not to bit equality. Weight-only, against the reference in
float32. With FP8 activations (mode "fp8", more than 8 tokens) against the reference in x's dtype, which
rounds act(gate) · up to it before quantizing it as the kernel does: there the e4m3 quantization turns a
bf16 rounding apart into a whole code step (6-12% of the value), and the float32 reference was 1.7% off the
kernel at 256 tokens on the H200 for that reason alone (2026-12-03).
"""
from __future__ import annotations

import pytest
import torch

from mii_core.model.quantization import quantize_weight
from mii_kernels.torch_ref.quant_linear import quant_moe_experts as reference

pytest.importorskip("triton", reason="triton comes with mii-kernels on Linux only")
from mii_kernels.triton import moe  # noqa: E402
from test_triton_ops import MOE_REAL, MOE_SMALL, cases, experts, routing, strided_rows  # noqa: E402


@pytest.mark.parametrize("mode", ["fp8", "wf6af16"])
@pytest.mark.parametrize("tokens, hidden, features, num_experts, top_k, idle, dtype",
                         cases(MOE_SMALL[:2] + MOE_SMALL[3:], MOE_REAL))
def test_quant_moe_matches_reference(mode, tokens, hidden, features, num_experts, top_k, idle, dtype):
    x = strided_rows(tokens, hidden, dtype, seed=17)
    weights, ids = routing(tokens, num_experts, top_k, idle)
    w_gate_up, w_down = (quantize_weight(w, mode) for w in experts(num_experts, hidden, features, torch.float32))
    got = moe.quant_moe_experts(x, weights, ids, w_gate_up, w_down, "silu")
    want = reference(x, weights, ids, w_gate_up, w_down, "silu")
    assert got.dtype == dtype and got.shape == want.shape
    if dtype == torch.float32:
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        return
    fp8_activations = w_gate_up.quantizes_activations_at(tokens)
    exact = want.float() if fp8_activations else reference(x.float(), weights, ids, w_gate_up, w_down, "silu")
    error = (got.float() - exact).norm() / exact.norm()
    assert error < 1e-2, error


@pytest.mark.parametrize("group", [16, 32, 24])  # 24: not a power of two, the dequantizing fallback
@pytest.mark.parametrize("tokens, hidden, features, num_experts, top_k, idle, dtype", cases(MOE_SMALL[:2]))
def test_grouped_scale_experts_match_reference(tokens, hidden, features, num_experts, top_k, idle, dtype, group):
    """Shipped block-wise FP8 stacks (a scale per row and group of input columns)."""
    from mii_core.model.quantization import QuantizedWeight

    x = strided_rows(tokens, hidden, dtype, seed=17)
    weights, ids = routing(tokens, num_experts, top_k, idle)

    def grouped(w):
        codes = quantize_weight(w, "wf8af16").data
        scale = torch.rand(*w.shape[:-1], -(-w.shape[-1] // group), device=w.device) * w.abs().amax() / 448 + 1e-3
        return QuantizedWeight(codes, scale, "wf8af16", w.shape[-1], group)

    w_gate_up, w_down = (grouped(w) for w in experts(num_experts, hidden, features, torch.float32))
    got = moe.quant_moe_experts(x, weights, ids, w_gate_up, w_down, "silu")
    want = reference(x, weights, ids, w_gate_up, w_down, "silu")
    assert got.dtype == dtype and got.shape == want.shape
    tolerance = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(got.float(), want.float(), **tolerance)


def test_fp8_fast_accumulation_config_runs_the_same_experts():
    """Config "fp8_fast_accum" (products left in the FP8 MMA's own accumulator on sm_90) launches the FP8
    experts as the default does; under the interpreter, where the products are summed in float32 either way,
    it gives the reference's result (and the sm_90 compile test builds its variant: 1,200 picks take the 64-row
    tile, the one on the FP8 warp-group MMA). On a GPU the MMA's accumulator keeps fewer bits than float32 over
    the whole K loop (the H200: 17% of the values apart from the reference, by up to 0.016, 2026-12-03): there
    the bound is 2% of the result's norm, the loss DeepSeek-V3 measured for that accumulation, which a wrong
    expert or a wrong scale exceeds many times over."""
    tokens, hidden, features, num_experts, top_k, idle = MOE_SMALL[2]
    x = strided_rows(tokens, hidden, torch.float32, seed=17)
    weights, ids = routing(tokens, num_experts, top_k, idle)
    w_gate_up, w_down = (quantize_weight(w, "fp8") for w in experts(num_experts, hidden, features, torch.float32))
    got = moe.TritonQuantMoe("fp8_fast_accum")(x, weights, ids, w_gate_up, w_down, "silu")
    want = reference(x, weights, ids, w_gate_up, w_down, "silu")
    if got.is_cuda:
        assert (got - want).norm() / want.norm() < 2e-2
    else:
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_a_moe_config_with_an_unknown_key_is_refused():
    with pytest.raises(ValueError, match="optionally 'fp8_fast_accum'"):
        moe.launch_config({"by": "picks", "ladder": ((None, (16, 64, 128, 1, 4, 4)),), "fp8_fastaccum": True})
