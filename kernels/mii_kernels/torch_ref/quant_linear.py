"""Reference quantized linear and experts (contracts: ``quant_linear`` / ``quant_moe_experts`` in
mii_core/model/ops.py): dequantize to float32, multiply in float32. Slow and plainly right: what every
faster kernel is tested against, and what a CPU runs."""
import torch

from mii_core.model.quant_formats import fake_quantize_e4m3
from mii_core.model.quantization import FP8_WEIGHT_ONLY_MAX_TOKENS, QuantizedWeight
from mii_kernels.torch_ref.activations import gated_activation
from mii_kernels.torch_ref.moe import route_through_experts


def activations_seen(x: torch.Tensor, weight: QuantizedWeight) -> torch.Tensor:
    """x in float32 as the GEMM sees it: per-tensor e4m3 in mode "fp8" for steps of many tokens."""
    rows = x.reshape(-1, x.shape[-1])
    if weight.quantizes_activations and rows.shape[0] > FP8_WEIGHT_ONLY_MAX_TOKENS:
        return fake_quantize_e4m3(x)
    return x.float()


def quant_linear(x: torch.Tensor, weight: QuantizedWeight, bias=None) -> torch.Tensor:
    out = activations_seen(x, weight) @ weight.dequantize(torch.float32).t()
    if bias is not None:
        out = out + bias.float()
    return out.to(x.dtype)


def quant_moe_experts(x: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor,
                      w_gate_up: QuantizedWeight, w_down: QuantizedWeight, activation: str) -> torch.Tensor:
    """Each expert dequantized in float32 when tokens were routed to it (weight-only), run in float32."""
    def run_expert(expert: int, rows: torch.Tensor) -> torch.Tensor:
        gate_up = w_gate_up.select(expert).dequantize(torch.float32)
        down = w_down.select(expert).dequantize(torch.float32)
        return gated_activation(rows.float() @ gate_up.t(), activation) @ down.t()
    return route_through_experts(x, topk_weights, topk_ids, w_gate_up.data.shape[0], run_expert)
