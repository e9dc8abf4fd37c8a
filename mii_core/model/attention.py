"""Self-attention over the blocked KV cache: the projections here, rotary + cache write and the
attention itself through the kernel ops (``rotary_write_kv``, ``paged_attention``).

A family whose attention differs subclasses :class:`Attention` in its plugin: ``params`` (the
``AttentionParams`` the op gets: ALiBi slopes, a soft cap) may be replaced after ``__init__``,
``adjust_qk`` changes the projected heads before rotary (Qwen3's per-head q/k RMSNorm does) and
``adjust_queries`` the rotated queries before the op (Qwen's log-n scaling does).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional, Protocol, runtime_checkable

import torch
from torch import nn

from mii_core.batch import RaggedBatch
from mii_core.distributed.parallel_context import ParallelContext
from mii_core.model.ops import AttentionParams, KernelOps
from mii_core.model.parallel import ColumnParallelLinear, RowParallelLinear
from mii_core.model.sharding import check_tensor_parallel, kv_head_slice
from mii_core.model.spec import DecoderSpec

Rope = tuple[torch.Tensor, torch.Tensor] | None


@runtime_checkable
class HoldsKVScales(Protocol):
    """What an attention part offers to store its keys and values in an FP8 KV cache (``engine/kv_dtype.py``
    gives every such part of a model its scales): :class:`Attention`, or a family's own part that writes the
    cache itself."""

    local_kv_heads: int

    def use_kv_scales(self, kv_scales: torch.Tensor) -> None:
        """Store K and V with these scales, float32 [2, local_kv_heads] (``AttentionParams.kv_scales``)."""


class Attention(nn.Module):
    """Engine parameters: ``qkv.{weight,bias}`` (shards "q", "k", "v"), ``o_proj.{weight,bias}``."""

    def __init__(self, spec: DecoderSpec, ctx: ParallelContext, kernels: KernelOps, device: torch.device,
                 dtype: torch.dtype, layer_index: int = 0):
        super().__init__()
        check_tensor_parallel(spec, ctx.world_size)
        self.kernels, self.head_dim, self.qkv_clip = kernels, spec.head_dim, spec.qkv_clip
        self.rotary_dim = ((spec.rope.rotary_dim or spec.head_dim) if spec.rope is not None else 0)
        self.params = AttentionParams(scale=spec.scale, window=spec.window_of(layer_index))
        self.local_heads = spec.num_heads // ctx.world_size
        first_kv, self.local_kv_heads = kv_head_slice(spec.num_kv_heads, ctx)
        q_size, kv_size = spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim
        kv_slice = (first_kv * spec.head_dim, self.local_kv_heads * spec.head_dim)
        self.qkv = ColumnParallelLinear(spec.hidden_size, [q_size, kv_size, kv_size], spec.qkv_bias, ctx,
                                        kernels, device, dtype, part_names=("q", "k", "v"),
                                        part_slices=[ctx.even_slice(q_size), kv_slice, kv_slice])
        self.o_proj = RowParallelLinear(q_size, spec.hidden_size, spec.o_bias, ctx, kernels, device, dtype)

    def input_linear(self) -> Optional[nn.Module]:
        """The linear this block's input goes into as it is (the fused q/k/v projection): a norm before the
        block may hand it the input's absmax (``FeedsLinears``); None for a subclass without one."""
        return getattr(self, "qkv", None)

    def takes_deferred_norm(self) -> bool:
        """Whether the norm before this block may leave its output to ``input_linear`` (``deferred_norm``): this
        forward passes its input straight into it; a subclass with a forward of its own may not."""
        return type(self).forward is Attention.forward

    def forward(self, hidden: torch.Tensor, batch: RaggedBatch, rope: Rope,
                kv_cache: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        q_size = self.local_heads * self.head_dim
        kv_size = self.local_kv_heads * self.head_dim
        qkv = self.qkv(hidden)
        if self.qkv_clip is not None:  # element-wise: each rank clamps its own heads alike
            qkv = qkv.clamp(min=-self.qkv_clip, max=self.qkv_clip)
        q, k, v = qkv.split([q_size, kv_size, kv_size], dim=-1)
        q = q.view(-1, self.local_heads, self.head_dim)
        k = k.view(-1, self.local_kv_heads, self.head_dim)
        v = v.view(-1, self.local_kv_heads, self.head_dim)
        q, k = self.adjust_qk(q, k)
        cos, sin = rope if rope is not None else (None, None)
        q = self.kernels.rotary_write_kv(q, k, v, cos, sin, self.rotary_dim, kv_cache[0], kv_cache[1],
                                         batch.slot_mapping, self.params.kv_scales)
        q = self.adjust_queries(q, batch)
        return self._project_out(q, kv_cache, batch, q_size)

    def _project_out(self, q: torch.Tensor, kv_cache: tuple[torch.Tensor, torch.Tensor], batch: RaggedBatch,
                     q_size: int) -> torch.Tensor:
        """The attention's output through the o projection. Where that product quantizes its input per tensor
        (mode "fp8", many tokens) the attention joins the output's absmax as it writes it, so that no pass
        over the output is spent on the scale (as a norm does for the projection it feeds)."""
        amax = self.o_proj.activation_amax(q.shape[0])
        out = self.kernels.paged_attention(q, kv_cache[0], kv_cache[1], batch, self.params, amax)
        out = out.reshape(-1, q_size)
        if amax is not None:
            self.o_proj.expect_input_amax(out, amax)
        return self.o_proj(out)

    def use_kv_scales(self, kv_scales: torch.Tensor) -> None:
        """Stores K and V in an FP8 cache with these scales, float32 [2, local KV heads] (``AttentionParams``)."""
        if tuple(kv_scales.shape) != (2, self.local_kv_heads):
            raise ValueError(f"kv_scales must be [2, {self.local_kv_heads}] (K and V per local KV head), "
                             f"got {tuple(kv_scales.shape)}")
        self.params = replace(self.params, kv_scales=kv_scales)

    def adjust_qk(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The projected queries [T, Hq_local, D] and keys [T, Hkv_local, D] before rotary; unchanged here."""
        return q, k

    def adjust_queries(self, q: torch.Tensor, batch: RaggedBatch) -> torch.Tensor:
        """The rotated queries [T, Hq_local, D] as the attention op gets them; unchanged here."""
        return q
