"""The generic decoder every built-in architecture is composed from, as its :class:`DecoderSpec` says.

``build_model`` contract (what :meth:`ArchitecturePolicy.build_model` returns): an ``nn.Module`` whose
``forward(batch: RaggedBatch, kv_caches: list[(k_cache, v_cache)]) -> Tensor`` returns float32 logits
[R, vocab] of the tokens ``batch.logit_index`` names (each sequence's last new token, or all of a prompt
chunk a sequence scores), whose parameters each carry a
``weight_loader(param, tensor, shard_id, name=...)``, that has a ``spec`` attribute, and a method
``prompt_variant(prompt_length: int) -> Optional[int]``: what a sequence's cached K/V depend on besides
its tokens, given the prompt length it was admitted with (``RaggedBatch.prompt_lens``), or None when they
depend on the tokens alone. The prefix cache roots a prompt's blocks at that value, so blocks are shared
only between prompts of the same variant (Qwen v1's NTK alpha is one). It may have a method
``restart_length(prompt_length: int) -> Optional[int]``: the sequence length at which the cached K/V of a
sequence admitted with that prompt length go stale, so that the scheduler then recomputes all its tokens as one
prompt of that length (Phi-3's LongRoPE, as HF's generate does); None: never. It must not loop over sequences,
and should call kernels only through the ``kernels`` it was given.

A family whose blocks differ from the spec's builds ``DecoderModel(spec, ..., parts=DecoderParts(...))``
with its own factories (:mod:`mii_core.model.parts`), or subclasses it (an extra embedding norm, say).

Engine parameter names (what weight rules map checkpoint tensors onto):
``embed.weight``, ``positions.weight`` (learned positions), ``project_in.weight``,
``layers.{i}.*`` (:mod:`mii_core.model.layers`), ``final_norm.{weight,bias}``, ``project_out.weight``,
``lm_head.weight`` (absent when tied to ``embed``), ``lm_head_bias``.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from mii_core.batch import RaggedBatch
from mii_core.distributed.parallel_context import ParallelContext
from mii_core.model.layers import DecoderLayer
from mii_core.model.ops import KernelOps
from mii_core.model.parallel import ReplicatedEmbedding, ReplicatedLinear, VocabParallelEmbedding, VocabParallelHead
from mii_core.model.parameters import empty_parameter
from mii_core.model.parts import DecoderParts
from mii_core.model.spec import DecoderSpec


class DecoderModel(nn.Module):
    def __init__(self, spec: DecoderSpec, ctx: ParallelContext, kernels: KernelOps, device: torch.device,
                 dtype: torch.dtype, parts: DecoderParts = DecoderParts()):
        super().__init__()
        self.spec, self.kernels, self.parts = spec, kernels, parts
        self.rotary = parts.rotary(spec, device)
        self._build_inputs(spec, ctx, kernels, device, dtype)
        self.layers = nn.ModuleList(DecoderLayer(spec, ctx, kernels, device, dtype, layer_index=i, parts=parts)
                                    for i in range(spec.num_layers))
        self._build_head(spec, ctx, kernels, device, dtype)

    def prompt_variant(self, prompt_length: int) -> Optional[int]:
        """The ``build_model`` contract's hook: the rotary part's answer (None without one)."""
        return self.rotary.prompt_variant(prompt_length) if self.rotary is not None else None

    def restart_length(self, prompt_length: int) -> Optional[int]:
        """The ``build_model`` contract's optional hook: the rotary part's answer, if it has one (None: never)."""
        answer = getattr(self.rotary, "restart_length", None)
        return answer(prompt_length) if answer is not None else None

    def _build_inputs(self, spec: DecoderSpec, ctx: ParallelContext, kernels: KernelOps, device: torch.device,
                      dtype: torch.dtype) -> None:
        self.embed = VocabParallelEmbedding(spec.vocab_size, spec.word_embed_dim, ctx, device, dtype)
        # rounded to the model's dtype first, as HF's Gemma (a bf16 sqrt(3072) is 55.5, not 55.4256)
        self.embedding_multiplier = None if spec.embedding_multiplier is None else \
            torch.tensor(spec.embedding_multiplier, dtype=dtype).item()
        projected = spec.word_embed_dim != spec.hidden_size
        self.project_in = ReplicatedLinear(spec.word_embed_dim, spec.hidden_size, False, kernels, device, dtype) \
            if projected else None
        self.positions = ReplicatedEmbedding(spec.max_position_embeddings + spec.learned_position_offset,
                                             spec.hidden_size, device, dtype) if spec.learned_positions else None

    def _build_head(self, spec: DecoderSpec, ctx: ParallelContext, kernels: KernelOps, device: torch.device,
                    dtype: torch.dtype) -> None:
        self.final_norm = self.parts.norm(spec, kernels, device, dtype) if spec.final_norm else None
        self.project_out = ReplicatedLinear(spec.hidden_size, spec.word_embed_dim, False, kernels, device, dtype) \
            if self.project_in is not None else None
        self.lm_head = self.embed if spec.tie_word_embeddings else VocabParallelHead(
            spec.vocab_size, spec.word_embed_dim, ctx, device, dtype)
        self.lm_head_bias = None
        if spec.lm_head_bias:  # split over ranks as the head's rows are
            self.lm_head_bias = empty_parameter((self.lm_head.local_rows,), device, dtype)
            self.lm_head_bias.weight_loader = self.lm_head._load

    def embed_tokens(self, batch: RaggedBatch) -> torch.Tensor:
        hidden = self.embed(batch.token_ids)
        if self.embedding_multiplier is not None:
            hidden = hidden * self.embedding_multiplier
        if self.project_in is not None:
            hidden = self.project_in(hidden)
        if self.positions is not None:
            hidden = hidden + self.positions(batch.positions + self.spec.learned_position_offset)
        return hidden

    def logits(self, last_hidden: torch.Tensor) -> torch.Tensor:
        """``last_hidden`` [R, H], the tokens ``RaggedBatch.logit_index`` names → float32 logits [R, vocab]."""
        if self.final_norm is not None:
            last_hidden = self.final_norm(last_hidden)
        if self.project_out is not None:
            last_hidden = self.project_out(last_hidden)
        logits = self.lm_head.logits(last_hidden, self.lm_head_bias, self.kernels)
        cap = self.spec.final_logit_softcap
        return logits if cap is None else torch.tanh(logits / cap) * cap

    @torch.inference_mode()
    def forward(self, batch: RaggedBatch, kv_caches: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        hidden, residual = self.embed_tokens(batch), None
        rope = self.rotary.tables(batch, hidden.dtype) if self.rotary is not None else None
        for layer, kv_cache in zip(self.layers, kv_caches):
            hidden, residual = layer(hidden, residual, batch, rope, kv_cache)
        # only the tokens whose logits are wanted (each sequence's last, or every prompt token a sequence
        # scores): gathered before the norm and the big matmul
        wanted = hidden.index_select(0, batch.logit_index)
        if residual is not None:
            wanted = wanted + residual.index_select(0, batch.logit_index)
        return self.logits(wanted)
