"""Multi-head latent attention (MLA) over a KV cache of the compressed latent.

Each token's keys and values are one latent of ``kv_lora_rank`` features (``kv_a_proj`` → RMSNorm) plus one
rotary key of ``qk_rope_head_dim`` features, both shared by every head. The cache holds exactly that: one
KV head (multi-query attention) whose key slot is [normalised latent | rotated rope key] and whose value is
the key's first ``kv_lora_rank`` features (the spec's ``value_in_key``: stored once).

HF up-projects the latent to each head's key (``kv_b_proj``'s W_uk rows) and value (its W_uv rows). Here the
up-projections are absorbed instead: head h's query becomes [q_nope,h · W_uk,h | q_rope,h] (q_nope · k_nope =
(q_nope · W_uk) · latent), the core's ``paged_attention`` op runs over the latent cache with the family's
softmax scale, and its output (a mix of latents, ``kv_lora_rank`` features per head) goes through W_uv,h
before ``o_proj``. The two per-head products are batched matmuls (``torch.bmm``: cuBLAS) on ``kv_b_proj``'s
weight, read as [heads, nope + v, kv_lora_rank] with no copy (a quantized one is dequantized: see
:meth:`~mii_core.model.parallel.ColumnParallelLinear.dense_weight`; the plugin builds ``kv_b_proj`` in full
precision unless the checkpoint ships it quantized).

The rope features (pairs, HF's layout) are rotated here in float32 with float32 tables and cast once, as HF
does (:func:`~mii_plugin_deepseek_v2.rope.rotate_pairs`): the ``rotary_write_kv`` op then only writes the
cache (rotary_dim 0).

Engine parameters of ``layers.{i}.attn``: ``q_proj`` (no ``q_lora_rank``) or ``q_a_proj``, ``q_a_norm``,
``q_b_proj``; ``kv_a_proj`` ([latent | rope key]), ``kv_a_norm``, ``kv_b_proj`` (per head [k_nope | v]),
``o_proj``. Under tensor parallelism each rank holds its heads' rows of ``q_proj`` / ``q_b_proj`` /
``kv_b_proj`` and columns of ``o_proj``; the latent projections, and so the latent cache, are whole on
every rank.
"""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from mii_core.batch import RaggedBatch
from mii_core.distributed.parallel_context import ParallelContext
from mii_core.model.norm import Norm
from mii_core.model.ops import AttentionParams, KernelOps
from mii_core.model.parallel import ColumnParallelLinear, ReplicatedLinear, RowParallelLinear
from mii_core.model.quantization import building_quantized, building_shipped
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
        self.kernels, self.shape = kernels, shape
        self.local_heads = shape.num_heads // ctx.world_size
        self.local_kv_heads = 1  # the latent, whole on every rank
        self.params = AttentionParams(scale=spec.scale)
        self._build_queries(spec, ctx, device, dtype)
        self.kv_a_proj = ReplicatedLinear(spec.hidden_size, shape.latent_dim, shape.bias, kernels, device, dtype)
        self.kv_a_norm = Norm("rms", shape.kv_lora_rank, LATENT_NORM_EPS, kernels, device, dtype)
        self.kv_b_proj = _full_precision_unless_shipped(
            lambda: ColumnParallelLinear(shape.kv_lora_rank, [shape.num_heads * (shape.qk_nope_head_dim
                                                                                 + shape.v_head_dim)],
                                         False, ctx, kernels, device, dtype))
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

    def up_projections(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's W_uk [heads, qk_nope_head_dim, kv_lora_rank] and W_uv [heads, v_head_dim, kv_lora_rank]:
        views of ``kv_b_proj``'s rows, each head's [k_nope | v] (HF's order)."""
        shape = self.shape
        per_head = self.kv_b_proj.dense_weight(dtype).view(self.local_heads, -1, shape.kv_lora_rank)
        return per_head.split([shape.qk_nope_head_dim, shape.v_head_dim], dim=1)

    def latent_queries(self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                       w_uk: torch.Tensor) -> torch.Tensor:
        """[T, local heads, kv_lora_rank + qk_rope_head_dim]: each head's [q_nope · W_uk | rotated q_rope]."""
        shape = self.shape
        q = self.q_proj(hidden) if self.q_proj is not None else self.q_b_proj(self.q_a_norm(self.q_a_proj(hidden)))
        nope, rope = q.view(-1, self.local_heads, shape.qk_head_dim).split(
            [shape.qk_nope_head_dim, shape.qk_rope_head_dim], dim=-1)
        absorbed = torch.bmm(nope.transpose(0, 1), w_uk).transpose(0, 1)  # [T, H, kv_lora_rank]
        return torch.cat((absorbed, rotate_pairs(rope, cos[:, None, :], sin[:, None, :])), dim=-1)

    def latent_keys(self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """[T, 1, kv_lora_rank + qk_rope_head_dim]: the cache's one KV head, [normalised latent | rotated rope key]."""
        latent, rope_key = self.kv_a_proj(hidden).split([self.shape.kv_lora_rank, self.shape.qk_rope_head_dim],
                                                        dim=-1)
        return torch.cat((self.kv_a_norm(latent.contiguous()), rotate_pairs(rope_key, cos, sin)), dim=-1)[:, None, :]

    def forward(self, hidden: torch.Tensor, batch: RaggedBatch, rope, kv_cache: tuple[torch.Tensor, torch.Tensor]):
        cos, sin = rope
        w_uk, w_uv = self.up_projections(hidden.dtype)
        q = self.latent_queries(hidden, cos, sin, w_uk)
        # the value is the key's first kv_lora_rank features (kv_cache[1] is that view): only the key is written
        q = self.kernels.rotary_write_kv(q, self.latent_keys(hidden, cos, sin), None, None, None, 0,
                                         kv_cache[0], kv_cache[1], batch.slot_mapping, self.params.kv_scales)
        mixed = self.kernels.paged_attention(q, kv_cache[0], kv_cache[1], batch, self.params)  # [T, H, kv_lora_rank]
        values = torch.bmm(mixed.transpose(0, 1), w_uv.transpose(1, 2)).transpose(0, 1)      # [T, H, v_head_dim]
        return self.o_proj(values.reshape(-1, self.local_heads * self.shape.v_head_dim))


    def use_kv_scales(self, kv_scales: torch.Tensor) -> None:
        """An FP8 cache of the latent: float32 [2, 1], K's scale and V's, which must be equal (the value is read
        from the key's bytes, written with K's scale)."""
        if tuple(kv_scales.shape) != (2, 1) or not torch.equal(kv_scales[0], kv_scales[1]):
            raise ValueError(f"the latent KV cache takes one FP8 scale for K and V alike (the value is the key's "
                             f"first features): kv_scales must be [2, 1] with equal rows, got {kv_scales.tolist()}")
        self.params = replace(self.params, kv_scales=kv_scales)


def _full_precision_unless_shipped(build):
    """``kv_b_proj`` is multiplied per head by ``torch.bmm``, not through ``linear``/``quant_linear``: quantizing
    it would only add a dequantization to every step, so it stays in the model's dtype under
    ``quantization_mode``. A checkpoint shipping it in FP8 keeps its codes (dequantized each step)."""
    if building_shipped() is not None:
        return build()
    with building_quantized(None):
        return build()
