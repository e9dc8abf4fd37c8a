"""The reference quantized ops (mii_kernels.torch_ref.quant_linear) against float64 products of the
dequantized weights, and the quantizing weight slot's streaming."""
import pytest
import torch

from mii_core.model.parameters import WeightSlot
from mii_core.model.quantization import FP8_WEIGHT_ONLY_MAX_TOKENS, quantize_weight
from mii_kernels.torch_ref.quant_linear import quant_linear, quant_moe_experts

MODES = ("fp8", "wf8af16", "wf6af16")


def _f64_e4m3_per_tensor(x: torch.Tensor) -> torch.Tensor:
    """x as an FP8 GEMM sees it, worked out independently: one scale amax/448, codes by torch's cast."""
    scale = x.double().abs().max() / 448
    return (x.double() / scale).float().to(torch.float8_e4m3fn).double() * scale


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tokens", [1, FP8_WEIGHT_ONLY_MAX_TOKENS, 33])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_quant_linear_matches_float64_dequant_matmul(mode, tokens, dtype):
    gen = torch.Generator().manual_seed(tokens)
    x = torch.randn(tokens, 70, generator=gen).to(dtype)
    weight = torch.randn(24, 70, generator=gen)
    bias = torch.randn(24, generator=gen).to(dtype)
    q = quantize_weight(weight, mode)
    x64 = _f64_e4m3_per_tensor(x) if mode == "fp8" and tokens > FP8_WEIGHT_ONLY_MAX_TOKENS else x.double()
    expected = x64 @ q.dequantize(torch.float64).t() + bias.double()
    got = quant_linear(x, q, bias)
    assert got.dtype == dtype and got.shape == (tokens, 24)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got.double(), expected, rtol=tol, atol=tol * 10)


def test_fp8_activations_are_quantized_only_for_many_tokens():
    gen = torch.Generator().manual_seed(1)
    weight = quantize_weight(torch.randn(8, 16, generator=gen), "fp8")
    few, many = torch.randn(FP8_WEIGHT_ONLY_MAX_TOKENS, 16, generator=gen), torch.randn(9, 16, generator=gen)
    exact = lambda x: x.double() @ weight.dequantize(torch.float64).t()  # noqa: E731
    torch.testing.assert_close(quant_linear(few, weight).double(), exact(few), rtol=1e-6, atol=1e-5)
    assert not torch.allclose(quant_linear(many, weight).double(), exact(many), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tokens", [FP8_WEIGHT_ONLY_MAX_TOKENS, 13])
def test_quant_moe_experts_matches_float64_dense(mode, tokens):
    """Token by token in float64; in mode "fp8" with more than 8 tokens the experts' input, then every pick's
    act(gate) · up (in x's dtype), each through one per-tensor e4m3 quantization (ops.py's contract)."""
    gen = torch.Generator().manual_seed(2)
    experts, hidden, width, k = 4, 12, 10, 2
    x = torch.randn(tokens, hidden, generator=gen)
    gate_up = quantize_weight(torch.randn(experts, 2 * width, hidden, generator=gen), mode)
    down = quantize_weight(torch.randn(experts, hidden, width, generator=gen), mode)
    weights = torch.rand(tokens, k, generator=gen)
    ids = torch.stack([torch.randperm(experts, generator=gen)[:k] for _ in range(tokens)])
    fp8_activations = mode == "fp8" and tokens > FP8_WEIGHT_ONLY_MAX_TOKENS
    x64 = _f64_e4m3_per_tensor(x) if fp8_activations else x.double()
    w1, w2 = gate_up.dequantize(torch.float64), down.dequantize(torch.float64)
    activated = torch.zeros(tokens, k, width, dtype=torch.float64)
    for t in range(tokens):
        for j in range(k):
            gate, up = (x64[t] @ w1[ids[t, j]].t()).chunk(2)
            activated[t, j] = torch.nn.functional.silu(gate) * up
    if fp8_activations:
        activated = _f64_e4m3_per_tensor(activated.float())
    expected = torch.zeros(tokens, hidden, dtype=torch.float64)
    for t in range(tokens):
        for j in range(k):
            expected[t] += weights[t, j].double() * (activated[t, j] @ w2[ids[t, j]].t())
    got = quant_moe_experts(x, weights, ids, gate_up, down, "silu")
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-4)


def test_slot_quantizes_once_every_part_arrived_and_frees_its_staging():
    weight = torch.randn(6, 8)
    slot = WeightSlot((6, 8), torch.device("cpu"), torch.float32, "wf8af16")
    assert slot.param.is_meta and slot.quantized is None and not slot.staged
    slot.copy(slot.buffer().narrow(0, 0, 4), weight[:4], "first part")
    assert slot.quantized is None and slot.staged
    slot.copy(slot.buffer().narrow(0, 4, 2), weight[4:], "second part")
    assert not slot.staged
    assert torch.equal(slot.quantized.dequantize(), quantize_weight(weight, "wf8af16").dequantize())


def test_full_precision_slot_is_its_parameter():
    slot = WeightSlot((2, 3), torch.device("cpu"), torch.float32)
    slot.copy(slot.buffer(), torch.ones(2, 3), "w")
    assert torch.equal(slot.param.data, torch.ones(2, 3)) and slot.quantized is None


@pytest.mark.parametrize("mode", MODES)
def test_quantizing_in_chunks_changes_nothing(mode):
    weight = torch.randn(3, 10, 6, generator=torch.Generator().manual_seed(3))
    whole, chunked = quantize_weight(weight, mode), quantize_weight(weight, mode, chunk_elements=7)
    assert torch.equal(whole.data.view(torch.uint8), chunked.data.view(torch.uint8))
    assert torch.equal(whole.scale, chunked.scale) and whole.scale.shape == (3, 10)


@pytest.mark.parametrize("tokens", [FP8_WEIGHT_ONLY_MAX_TOKENS, 21])
def test_independent_experts_reference_agrees_with_the_engines(tokens):
    """tests/support's experts forward (transformers' Mixtral experts holding the dequantized weights, as the
    parity tests load them) and the engine's reference op, two implementations of the contract, agree on
    both sides of the 8-token line; with jitter the independent one moves (its tie detection needs that)."""
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralExperts

    from support.quant_reference import hook_fp8_inputs

    gen = torch.Generator().manual_seed(tokens)
    experts, hidden, width, k = 4, 16, 24, 2
    config = MixtralConfig(hidden_size=hidden, intermediate_size=width, num_local_experts=experts)
    gate_up = quantize_weight(torch.randn(experts, 2 * width, hidden, generator=gen), "fp8")
    down = quantize_weight(torch.randn(experts, hidden, width, generator=gen), "fp8")
    x = torch.randn(tokens, hidden, generator=gen)
    weights = torch.rand(tokens, k, generator=gen)
    ids = torch.stack([torch.randperm(experts, generator=gen)[:k] for _ in range(tokens)])
    want = quant_moe_experts(x, weights, ids, gate_up, down, "silu")

    def independent(jitter: float) -> torch.Tensor:
        model = torch.nn.Module()
        model.experts = MixtralExperts(config)
        model.experts.gate_up_proj.data = gate_up.dequantize(torch.float32)
        model.experts.down_proj.data = down.dequantize(torch.float32)
        model.forward = lambda input_ids: model.experts(x, ids, weights)
        hook_fp8_inputs(model, set(), jitter)
        with torch.no_grad():
            return model(input_ids=torch.zeros(1, tokens, dtype=torch.long))

    torch.testing.assert_close(independent(0.0), want, rtol=1e-5, atol=1e-5)
    if tokens > FP8_WEIGHT_ONLY_MAX_TOKENS:
        assert not torch.allclose(independent(0.05), want, rtol=1e-5, atol=1e-5)
