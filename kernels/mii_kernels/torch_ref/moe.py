"""Reference MoE: a loop over experts (never over tokens or sequences), each on the tokens routed to it."""
import torch

from mii_kernels.torch_ref.activations import gated_activation


def moe_experts(x: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor, w_gate_up: torch.Tensor,
                w_down: torch.Tensor, activation: str) -> torch.Tensor:
    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    flat_ids = topk_ids.reshape(-1)
    token_of_pick = torch.arange(x.shape[0], device=x.device).repeat_interleave(topk_ids.shape[1])
    order = torch.argsort(flat_ids, stable=True)
    counts = torch.bincount(flat_ids, minlength=w_gate_up.shape[0]).tolist()  # host sync: reference only
    for expert, picks in enumerate(order.split(counts)):
        if picks.numel() == 0:
            continue
        tokens = token_of_pick[picks]
        hidden = gated_activation(x[tokens] @ w_gate_up[expert].t(), activation) @ w_down[expert].t()
        out.index_add_(0, tokens, hidden.float() * topk_weights.reshape(-1)[picks, None])
    return out.to(x.dtype)
