"""The generic pre-norm decoder every Llama-like architecture is built from.

Engine-side parameter names (what plugins map checkpoint tensors onto):
``embed.weight``, ``layers.{i}.attn_norm.{weight,bias}``, ``layers.{i}.attn.qkv.{weight,bias}``
(shards "q", "k", "v"), ``layers.{i}.attn.o_proj.{weight,bias}``, ``layers.{i}.mlp_norm.{weight,bias}``,
``layers.{i}.mlp.up.{weight,bias}`` (shards "gate", "up"; just "up" when not gated),
``layers.{i}.mlp.down.{weight,bias}``, ``final_norm.{weight,bias}``, ``lm_head.weight``.
"""
from __future__ import annotations

import torch
from torch import nn

from mii_core.batch import RaggedBatch
from mii_core.model.attention import Attention
from mii_core.model.mlp import MLP
from mii_core.model.parallel import Norm, ParallelContext, ReplicatedEmbedding
from mii_core.model.rotary import RotaryEmbedding
from mii_core.model.spec import DecoderSpec


class DecoderLayer(nn.Module):
    def __init__(self, spec: DecoderSpec, ctx: ParallelContext, kernels, rotary, device, dtype):
        super().__init__()
        self.attn_norm = Norm(spec.norm, spec.hidden_size, spec.norm_eps, kernels, device, dtype)
        self.attn = Attention(spec, ctx, kernels, rotary, device, dtype)
        self.mlp_norm = Norm(spec.norm, spec.hidden_size, spec.norm_eps, kernels, device, dtype)
        self.mlp = MLP(spec, ctx, kernels, device, dtype)

    def forward(self, hidden, batch, rope, kv_cache):
        hidden = hidden + self.attn(self.attn_norm(hidden), batch, rope, kv_cache)
        return hidden + self.mlp(self.mlp_norm(hidden))


class DecoderModel(nn.Module):
    def __init__(self, spec: DecoderSpec, ctx: ParallelContext, kernels, device: torch.device, dtype: torch.dtype):
        super().__init__()
        self.spec = spec
        self.rotary = None
        if spec.rope is not None:
            self.rotary = RotaryEmbedding(spec.rope, spec.head_dim, spec.max_position_embeddings, device)
        self.embed = ReplicatedEmbedding(spec.vocab_size, spec.hidden_size, device, dtype)
        self.layers = nn.ModuleList(DecoderLayer(spec, ctx, kernels, self.rotary, device, dtype)
                                    for _ in range(spec.num_layers))
        self.final_norm = Norm(spec.norm, spec.hidden_size, spec.norm_eps, kernels, device, dtype)
        self.lm_head = self.embed if spec.tie_word_embeddings else ReplicatedEmbedding(
            spec.vocab_size, spec.hidden_size, device, dtype)

    @torch.inference_mode()
    def forward(self, batch: RaggedBatch, kv_caches: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Returns float32 logits [S, vocab] of each sequence's last new token."""
        hidden = self.embed(batch.token_ids)
        rope = self.rotary.cos_sin(batch.positions, hidden.dtype) if self.rotary is not None else None
        for layer, kv_cache in zip(self.layers, kv_caches):
            hidden = layer(hidden, batch, rope, kv_cache)
        # only the last token of each sequence needs logits: gather before the norm and the big matmul
        last = self.final_norm(hidden.index_select(0, batch.last_token_index))
        return nn.functional.linear(last, self.lm_head.weight).float()
