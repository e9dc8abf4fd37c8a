"""Reference MoE: a loop over experts (never over tokens or sequences), each on the tokens routed to it."""
from typing import Callable

import torch

from mii_kernels.torch_ref.activations import gated_activation


def route_through_experts(x: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor, num_experts: int,
                          run_expert: Callable[[int, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """sum_j topk_weights[t, j] · run_expert(topk_ids[t, j], x[t]) in float32, cast to x's dtype;
    ``run_expert(e, rows)`` runs expert e on the rows routed to it."""
    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    token_of_pick = torch.arange(x.shape[0], device=x.device).repeat_interleave(topk_ids.shape[1])
    for expert, picks in picks_by_expert(topk_ids, num_experts):
        tokens = token_of_pick[picks]
        out.index_add_(0, tokens, run_expert(expert, x[tokens]).float() * topk_weights.reshape(-1)[picks, None])
    return out.to(x.dtype)


def picks_by_expert(topk_ids: torch.Tensor, num_experts: int) -> list[tuple[int, torch.Tensor]]:
    """(expert, the indices of the picks routed to it, in pick order) for every expert that has any."""
    flat_ids = topk_ids.reshape(-1)
    order = torch.argsort(flat_ids, stable=True)
    counts = torch.bincount(flat_ids, minlength=num_experts).tolist()  # host sync: reference only
    return [(expert, picks) for expert, picks in enumerate(order.split(counts)) if picks.numel()]


def moe_experts(x: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor, w_gate_up: torch.Tensor,
                w_down: torch.Tensor, activation: str) -> torch.Tensor:
    def run_expert(expert: int, rows: torch.Tensor) -> torch.Tensor:
        return gated_activation(rows @ w_gate_up[expert].t(), activation) @ w_down[expert].t()
    return route_through_experts(x, topk_weights, topk_ids, w_gate_up.shape[0], run_expert)
