"""Multi-head latent attention (MLA), first slice: the latent is up-projected to every head's full key
(no-rope part from ``kv_b_proj``, rope part shared by the heads) and value, which the core's paged KV cache
holds and the core's ``paged_attention`` op reads, as for any multi-head attention. A cache slot is
``max(qk_head_dim, v_head_dim)`` features per head: the narrower of key and value is zero-padded (zeros add
nothing to q·k, and the padded output features are cut off before ``o_proj``).

A head is [nope | rope] as in HF. The rope features (pairs, HF's layout) are rotated here in float32 with
float32 tables and cast once, as HF does (:func:`~mii_plugin_deepseek_v2.rope.rotate_pairs`): the
``rotary_write_kv`` op, which rotates in the activations' dtype, then only writes the cache (rotary_dim 0).

Engine parameters of ``layers.{i}.attn``: ``q_proj`` (no ``q_lora_rank``) or ``q_a_proj``, ``q_a_norm``,
``q_b_proj``; ``kv_a_proj`` ([latent | rope key]), ``kv_a_norm``, ``kv_b_proj`` (per head [k_nope | v]),
``o_proj``. Under tensor parallelism each rank holds its heads' rows of ``q_proj`` / ``q_b_proj`` /
``kv_b_proj`` and columns of ``o_proj``; the latent projections are whole on every rank.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from mii_core.batch import RaggedBatch
from mii_core.distributed.parallel_context import ParallelContext
from mii_core.model.norm import Norm
from mii_core.model.ops import AttentionParams, KernelOps
from mii_core.model.parallel import ColumnParallelLinear, ReplicatedLinear, RowParallelLinear
from mii_core.model.sharding import check_tensor_parallel
from mii_core.model.spec import DecoderSpec

from mii_plugin_deepseek_v2.config import LatentShape
from mii_plugin_deepseek_v2.rope import rotate_pairs

LATENT_NORM_EPS = 1e-6  # HF builds q_a_layernorm / kv_a_layernorm with the RMSNorm default, not rms_norm_eps


class LatentAttention(nn.Module):
    """A ``DecoderParts.attention`` block (built with ``functools.partial(LatentAttention, shape=...)``)."""

    def __init__(self, spec: DecoderSpec, ctx: ParallelContext, kernels: KernelOps, device: torch.device,
                 dtype: torch.dtype, layer_index: int = 0, *, shape: LatentShape):
        super().__init__()
        check_tensor_parallel(spec, ctx.world_size)
        self.kernels, self.shape, self.slot_dim = kernels, shape, spec.head_dim
        self.local_heads = shape.num_heads // ctx.world_size
        self.params = AttentionParams(scale=spec.scale)
        self._build_queries(spec, ctx, device, dtype)
        self.kv_a_proj = ReplicatedLinear(spec.hidden_size, shape.kv_lora_rank + shape.qk_rope_head_dim, shape.bias,
                                          kernels, device, dtype)
        self.kv_a_norm = Norm("rms", shape.kv_lora_rank, LATENT_NORM_EPS, kernels, device, dtype)
        kv_width = shape.num_heads * (shape.qk_nope_head_dim + shape.v_head_dim)
        self.kv_b_proj = ColumnParallelLinear(shape.kv_lora_rank, [kv_width], False, ctx, kernels, device, dtype)
        self.o_proj = RowParallelLinear(shape.num_heads * shape.v_head_dim, spec.hidden_size, shape.bias, ctx,
                                        kernels, device, dtype)

    def _build_queries(self, spec: DecoderSpec, ctx: ParallelContext, device: torch.device,
                       dtype: torch.dtype) -> None:
        shape, kernels = self.shape, self.kernels
        q_width = shape.num_heads * shape.qk_head_dim
        self.q_proj = self.q_a_proj = self.q_a_norm = self.q_b_proj = None
        if shape.q_lora_rank is None:
            self.q_proj = ColumnParallelLinear(spec.hidden_size, [q_width], False, ctx, kernels, device, dtype)
            return
        self.q_a_proj = ReplicatedLinear(spec.hidden_size, shape.q_lora_rank, shape.bias, kernels, device, dtype)
        self.q_a_norm = Norm("rms", shape.q_lora_rank, LATENT_NORM_EPS, kernels, device, dtype)
        self.q_b_proj = ColumnParallelLinear(shape.q_lora_rank, [q_width], False, ctx, kernels, device, dtype)

    def queries(self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """[T, local heads, qk_head_dim], each head [nope | rotated rope]."""
        q = self.q_proj(hidden) if self.q_proj is not None else self.q_b_proj(self.q_a_norm(self.q_a_proj(hidden)))
        nope, rope = q.view(-1, self.local_heads, self.shape.qk_head_dim).split(
            [self.shape.qk_nope_head_dim, self.shape.qk_rope_head_dim], dim=-1)
        return torch.cat((nope, rotate_pairs(rope, cos[:, None, :], sin[:, None, :])), dim=-1)

    def keys_values(self, hidden: torch.Tensor, cos: torch.Tensor,
                    sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys [T, local heads, qk_head_dim] ([the head's nope key | the shared rotated rope key]) and values
        [T, local heads, v_head_dim], up-projected from the normalised latent."""
        shape = self.shape
        latent, rope_key = self.kv_a_proj(hidden).split([shape.kv_lora_rank, shape.qk_rope_head_dim], dim=-1)
        per_head = self.kv_b_proj(self.kv_a_norm(latent.contiguous()))
        nope_key, value = per_head.view(-1, self.local_heads, shape.qk_nope_head_dim + shape.v_head_dim).split(
            [shape.qk_nope_head_dim, shape.v_head_dim], dim=-1)
        rope_key = rotate_pairs(rope_key, cos, sin)[:, None, :].expand(-1, self.local_heads, -1)
        return torch.cat((nope_key, rope_key), dim=-1), value

    def forward(self, hidden: torch.Tensor, batch: RaggedBatch, rope, kv_cache: tuple[torch.Tensor, torch.Tensor]):
        cos, sin = rope
        q, (k, v) = self.queries(hidden, cos, sin), self.keys_values(hidden, cos, sin)
        q, k, v = (self._to_slot(x) for x in (q, k, v))
        q = self.kernels.rotary_write_kv(q, k, v, None, None, 0, kv_cache[0], kv_cache[1], batch.slot_mapping)
        out = self.kernels.paged_attention(q, kv_cache[0], kv_cache[1], batch, self.params)
        values = out[..., :self.shape.v_head_dim].reshape(-1, self.local_heads * self.shape.v_head_dim)
        return self.o_proj(values)

    def _to_slot(self, heads: torch.Tensor) -> torch.Tensor:
        """Zero-padded to the cache slot's width; contiguous either way (the kernels get plain [T, H, D] heads)."""
        missing = self.slot_dim - heads.shape[-1]
        return F.pad(heads, (0, missing)) if missing else heads.contiguous()
