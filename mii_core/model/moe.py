"""Mixture of experts: a router, top-k gating, and every expert's weights stacked in two tensors so
that one fused kernel (the ``moe_experts`` op) can run all experts at once.

Engine parameters: ``router.weight`` [E, H]; ``experts.gate_up`` [E, 2F, H] and ``experts.down``
[E, H, F]; with a shared expert ``shared_expert.up`` / ``shared_expert.down`` (a gated MLP,
:mod:`mii_core.model.mlp`) and, when it is gated, ``shared_expert_gate.weight`` [1, H]. Checkpoint
tensors load by shard id: ``"{e}.gate"`` / ``"{e}.up"`` / ``"{e}.down"`` for one expert's matrix (HF
per-expert layout), ``"{e}"`` for one expert's fused [2F, H], None for the whole stack.
Under tensor parallelism each rank holds a 1/N slice of every expert's F axis. Built in a quantization
mode, both stacks load into quantizing :class:`WeightSlot` objects (one scale per expert and output row) and
run through the ``quant_moe_experts`` op; the router stays in the model's dtype. From a checkpoint shipped
in FP8 the stacks hold its codes and scales as stored (``WeightSlot``).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from mii_core.distributed.parallel_context import ParallelContext
from mii_core.model.activations import GATED_ACTIVATIONS
from mii_core.model.ops import KernelOps
from mii_core.model.parameters import ShardId, WeightSlot, empty_parameter, load_whole
from mii_core.model.quantization import building_mode, building_shipped
from mii_core.model.spec import DecoderSpec


class Experts(nn.Module):
    def __init__(self, num_experts: int, hidden: int, intermediate: int, ctx: ParallelContext,
                 device: torch.device, dtype: torch.dtype):
        super().__init__()
        if intermediate % ctx.world_size:
            raise ValueError(f"expert width {intermediate} does not divide over {ctx.world_size} ranks")
        self.ctx, self.local_f = ctx, intermediate // ctx.world_size
        self.gate_up_slot = WeightSlot((num_experts, 2 * self.local_f, hidden), device, dtype, building_mode(), building_shipped())
        self.down_slot = WeightSlot((num_experts, hidden, self.local_f), device, dtype, building_mode(), building_shipped())
        self.gate_up, self.down = self.gate_up_slot.param, self.down_slot.param
        self.gate_up.weight_loader = self._load_gate_up
        self.down.weight_loader = self._load_down

    def _rank_slice(self, tensor: torch.Tensor, dim: int) -> torch.Tensor:
        full = self.local_f * self.ctx.world_size
        return tensor.narrow(dim, self.ctx.rank * self.local_f, self.local_f) if tensor.shape[dim] == full else tensor

    def _load_gate_up(self, param: nn.Parameter, loaded: torch.Tensor, shard_id: ShardId, name: str = "") -> None:
        expert, part = _parse(shard_id)
        slot, stack = self.gate_up_slot, self.gate_up_slot.buffer()
        if part is not None:  # one expert's gate or up matrix [F, H]
            offset = 0 if part == "gate" else self.local_f
            slot.copy(stack[expert].narrow(0, offset, self.local_f), self._rank_slice(loaded, 0), name)
            return
        if expert is None and (loaded.dim() != 3 or loaded.shape[0] != param.shape[0]):
            raise ValueError(f"checkpoint tensor '{name}' has shape {tuple(loaded.shape)}; a fused expert "
                             f"gate|up tensor must be [2F, H] per expert or [E, 2F, H] for all (E={param.shape[0]})")
        # select/narrow/chunk only narrow a lazy checkpoint view: each rank reads its rows of each expert
        matrices = [(expert, loaded)] if expert is not None else [(e, loaded.select(0, e)) for e in range(param.shape[0])]
        for e, matrix in matrices:
            if matrix.dim() != 2 or matrix.shape[0] % 2:
                raise ValueError(f"checkpoint tensor '{name}' has shape {tuple(loaded.shape)}; a fused expert "
                                 "gate|up tensor must be [2F, H] per expert or [E, 2F, H] for all")
            gate, up = matrix.chunk(2, dim=0)
            slot.copy(stack[e, :self.local_f], self._rank_slice(gate, 0), name)
            slot.copy(stack[e, self.local_f:], self._rank_slice(up, 0), name)

    def _load_down(self, param: nn.Parameter, loaded: torch.Tensor, shard_id: ShardId, name: str = "") -> None:
        expert, _part = _parse(shard_id)
        stack = self.down_slot.buffer()
        target = stack if expert is None else stack[expert]
        self.down_slot.copy(target, self._rank_slice(loaded, loaded.dim() - 1), name)

    def forward(self, kernels: KernelOps, hidden: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor,
                 activation: str) -> torch.Tensor:
        """Every token through its experts, by the op that matches how the stacks are held."""
        gate_up, down = self.gate_up_slot.quantized, self.down_slot.quantized
        if gate_up is not None and down is not None:
            return kernels.quant_moe_experts(hidden, weights, ids, gate_up, down, activation)
        # one stack shipped in FP8 and the other not (a checkpoint that left one kind of matrix unquantized):
        # the shipped one dequantized for the step (correct, slower)
        return kernels.moe_experts(hidden, weights, ids, _values(gate_up, self.gate_up, hidden.dtype),
                                   _values(down, self.down, hidden.dtype), activation)


def _values(quantized, param: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return param if quantized is None else quantized.dequantize(dtype)


def _parse(shard_id: ShardId) -> tuple[int | None, str | None]:
    if shard_id is None:
        return None, None
    expert, _, part = str(shard_id).partition(".")
    return int(expert), (part if part in ("gate", "up") else None)


class MoE(nn.Module):
    """Top-k routed experts of width ``spec.moe.expert_intermediate_size`` (default the spec's
    intermediate size), plus ``shared_expert`` (a dense MLP every token goes through) when given; with
    ``spec.moe.shared_expert_gate`` its output is scaled by sigmoid(x · w), w the [1, H] parameter
    ``shared_expert_gate.weight`` (Qwen2-MoE)."""

    def __init__(self, spec: DecoderSpec, ctx: ParallelContext, kernels: KernelOps, device: torch.device,
                 dtype: torch.dtype, shared_expert: Optional[nn.Module] = None):
        super().__init__()
        if spec.activation not in GATED_ACTIVATIONS:
            raise ValueError(f"activation '{spec.activation}' is not supported for experts "
                             f"(supported: {', '.join(GATED_ACTIVATIONS)})")
        self.ctx, self.kernels, self.moe = ctx, kernels, spec.moe
        self.activation = GATED_ACTIVATIONS[spec.activation]
        self.router = nn.Module()
        self.router.weight = empty_parameter((spec.moe.num_experts, spec.hidden_size), device, dtype)
        self.router.weight.weight_loader = load_whole
        width = spec.moe.expert_intermediate_size or spec.intermediate_size
        self.experts = Experts(spec.moe.num_experts, spec.hidden_size, width, ctx, device, dtype)
        self.shared_expert, self.shared_expert_gate = shared_expert, None
        if spec.moe.shared_expert_gate:
            if shared_expert is None:
                raise ValueError("MoESpec.shared_expert_gate needs a shared expert (shared_expert_intermediate_size)")
            self.shared_expert_gate = nn.Module()
            self.shared_expert_gate.weight = empty_parameter((1, spec.hidden_size), device, dtype)
            self.shared_expert_gate.weight.weight_loader = load_whole

    def route(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each token's experts: (float32 weights [T, k], int64 ids [T, k]). Softmax top-k here; a family
        routing otherwise (grouped top-k, a scaling factor) overrides this in its subclass."""
        router_logits = self.kernels.linear(hidden, self.router.weight, None)
        return top_k_gating(router_logits, self.moe.experts_per_token, self.moe.renormalize)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        weights, ids = self.route(hidden)
        out = self.experts(self.kernels, hidden, weights, ids, self.activation)
        out = self.ctx.all_reduce(out)
        if self.shared_expert is None:
            return out
        shared = self.shared_expert(hidden)  # its down projection all-reduces itself
        if self.shared_expert_gate is not None:
            shared = torch.sigmoid(self.kernels.linear(hidden, self.shared_expert_gate.weight, None)) * shared
        return out + shared


def top_k_gating(router_logits: torch.Tensor, k: int, renormalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax over all experts in float32, keep the k largest; renormalised they sum to 1 (Mixtral)."""
    probs = torch.softmax(router_logits, dim=-1, dtype=torch.float32)
    weights, ids = torch.topk(probs, k, dim=-1)
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, ids
