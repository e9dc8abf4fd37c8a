"""Self-attention over the blocked KV cache: projections and rotary here, the kernel op does the rest."""
from __future__ import annotations

import torch
from torch import nn

from mii_core.batch import RaggedBatch
from mii_core.model.parallel import ColumnParallelLinear, ParallelContext, RowParallelLinear
from mii_core.model.rotary import RotaryEmbedding
from mii_core.model.spec import DecoderSpec


class Attention(nn.Module):
    def __init__(self, spec: DecoderSpec, ctx: ParallelContext, kernels, rotary: RotaryEmbedding | None,
                 device: torch.device, dtype: torch.dtype):
        super().__init__()
        if spec.num_kv_heads % ctx.world_size:
            raise ValueError(f"{spec.num_kv_heads} KV heads do not divide over {ctx.world_size} ranks")
        self.kernels, self.rotary, self.head_dim = kernels, rotary, spec.head_dim
        self.local_heads = spec.num_heads // ctx.world_size
        self.local_kv_heads = spec.num_kv_heads // ctx.world_size
        q_size, kv_size = spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim
        self.qkv = ColumnParallelLinear(spec.hidden_size, [q_size, kv_size, kv_size], spec.qkv_bias, ctx,
                                        device, dtype, part_names=("q", "k", "v"))
        self.o_proj = RowParallelLinear(q_size, spec.hidden_size, spec.o_bias, ctx, device, dtype)
        self.scale = spec.head_dim ** -0.5

    def forward(self, hidden: torch.Tensor, batch: RaggedBatch, rope: tuple[torch.Tensor, torch.Tensor] | None,
                kv_cache: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        q_size = self.local_heads * self.head_dim
        kv_size = self.local_kv_heads * self.head_dim
        q, k, v = self.qkv(hidden).split([q_size, kv_size, kv_size], dim=-1)
        q = q.view(-1, self.local_heads, self.head_dim)
        k = k.view(-1, self.local_kv_heads, self.head_dim)
        v = v.view(-1, self.local_kv_heads, self.head_dim)
        if self.rotary is not None:
            q, k = self.kernels.rotary_embedding(q, k, rope[0], rope[1], self.rotary.rotary_dim)
        out = self.kernels.blocked_attention(q, k, v, kv_cache[0], kv_cache[1], batch, self.scale)
        return self.o_proj(out.reshape(-1, q_size))
