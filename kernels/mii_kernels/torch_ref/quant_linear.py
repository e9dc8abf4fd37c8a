"""Reference quantized linear and experts (contracts: ``quant_linear`` / ``quant_moe_experts`` in
mii_core/model/ops.py): dequantize to float32, multiply in float32. Slow and plainly right: what every
faster kernel is tested against, and what a CPU runs."""
import torch

from mii_core.model.quant_formats import fake_quantize_e4m3
from mii_core.model.quantization import QuantizedWeight
from mii_kernels.torch_ref.activations import gated_activation
from mii_kernels.torch_ref.moe import picks_by_expert, route_through_experts


def activations_seen(x: torch.Tensor, weight: QuantizedWeight) -> torch.Tensor:
    """x in float32 as the GEMM sees it: per-tensor e4m3 in mode "fp8" for steps of many tokens."""
    if weight.quantizes_activations_at(x.reshape(-1, x.shape[-1]).shape[0]):
        return fake_quantize_e4m3(x)
    return x.float()


def quant_linear(x: torch.Tensor, weight: QuantizedWeight, bias=None) -> torch.Tensor:
    out = activations_seen(x, weight) @ weight.dequantize(torch.float32).t()
    if bias is not None:
        out = out + bias.float()
    return out.to(x.dtype)


def quant_moe_experts(x: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor,
                      w_gate_up: QuantizedWeight, w_down: QuantizedWeight, activation: str) -> torch.Tensor:
    """Each expert dequantized in float32 when tokens were routed to it, run in float32: weight-only, or with
    FP8 activations (``fp8_activation_experts``) where a step of mode "fp8" quantizes them."""
    if w_gate_up.quantizes_activations_at(x.shape[0]):
        return fp8_activation_experts(x, topk_weights, topk_ids, w_gate_up, w_down, activation)

    def run_expert(expert: int, rows: torch.Tensor) -> torch.Tensor:
        gate_up = w_gate_up.select(expert).dequantize(torch.float32)
        down = w_down.select(expert).dequantize(torch.float32)
        return gated_activation(rows.float() @ gate_up.t(), activation) @ down.t()
    return route_through_experts(x, topk_weights, topk_ids, w_gate_up.data.shape[0], run_expert)


def fp8_activation_experts(x: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor,
                           w_gate_up: QuantizedWeight, w_down: QuantizedWeight, activation: str) -> torch.Tensor:
    """The experts as FP8 GEMMs see them: x through one per-tensor e4m3 quantization; each pick's act(gate) · up
    rounded to x's dtype (as the gate/up kernel stores it), then all picks' through one more; products of
    the dequantized values in float32. A loop over experts, twice: the second quantization needs every pick's."""
    seen_x = fake_quantize_e4m3(x)
    picks_of = picks_by_expert(topk_ids, w_gate_up.data.shape[0])
    token_of_pick = torch.arange(x.shape[0], device=x.device).repeat_interleave(topk_ids.shape[1])
    activated = torch.zeros((topk_ids.numel(), w_down.in_features), dtype=x.dtype, device=x.device)
    for expert, picks in picks_of:
        gate_up = seen_x[token_of_pick[picks]] @ w_gate_up.select(expert).dequantize(torch.float32).t()
        activated[picks] = gated_activation(gate_up.to(x.dtype), activation)
    seen_activated = fake_quantize_e4m3(activated)
    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    for expert, picks in picks_of:
        down = seen_activated[picks] @ w_down.select(expert).dequantize(torch.float32).t()
        out.index_add_(0, token_of_pick[picks], down * topk_weights.reshape(-1)[picks, None].float())
    return out.to(x.dtype)

