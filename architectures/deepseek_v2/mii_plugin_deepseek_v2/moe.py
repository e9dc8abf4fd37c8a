"""DeepSeek-V2's mixture of experts: the core's experts and shared expert, routed as HF's DeepseekV2TopkRouter."""
from __future__ import annotations

import torch

from mii_core.distributed.parallel_context import ParallelContext
from mii_core.model.moe import MoE
from mii_core.model.ops import KernelOps
from mii_core.model.parameters import empty_parameter, load_whole
from mii_core.model.spec import DecoderSpec

from mii_plugin_deepseek_v2.config import Routing


class DeepseekMoE(MoE):
    """Built as :class:`~mii_core.model.moe.MoE` (``build_mlp``'s ``moe_block``), with its :class:`Routing`; the
    router's weight is float32 whatever the model's dtype (HF keeps ``gate.weight`` in float32)."""

    def __init__(self, spec: DecoderSpec, ctx: ParallelContext, kernels: KernelOps, device: torch.device,
                 dtype: torch.dtype, shared_expert=None, *, routing: Routing):
        super().__init__(spec, ctx, kernels, device, dtype, shared_expert=shared_expert)
        self.routing = routing
        self.router.weight = empty_parameter((spec.moe.num_experts, spec.hidden_size), device, torch.float32)
        self.router.weight.weight_loader = load_whole

    def route(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Router logits in float32, softmax, the top k (of the kept groups with group_limited_greedy), times
        routed_scaling_factor."""
        logits = self.kernels.linear(hidden.float(), self.router.weight, None)
        scores = torch.softmax(logits, dim=-1, dtype=torch.float32)
        if self.routing.method == "group_limited_greedy":
            scores = best_groups_only(scores, self.routing.groups, self.routing.topk_groups)
        weights, ids = torch.topk(scores, self.routing.experts_per_token, dim=-1)
        return weights * self.routing.scaling, ids


def best_groups_only(scores: torch.Tensor, groups: int, kept: int) -> torch.Tensor:
    """``scores`` [T, E] with every expert outside each token's ``kept`` best groups (a group scores as its
    best expert) set to 0, as HF's group_limited_greedy."""
    grouped = scores.view(scores.shape[0], groups, -1)
    best_groups = torch.topk(grouped.amax(dim=-1), kept, dim=-1).indices
    keep = torch.zeros(scores.shape[0], groups, dtype=torch.bool, device=scores.device)
    keep.scatter_(1, best_groups, True)
    return grouped.masked_fill(~keep[:, :, None], 0.0).view_as(scores)
