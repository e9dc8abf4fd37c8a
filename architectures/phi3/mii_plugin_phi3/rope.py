"""Phi-3's LongRoPE (``rope_type`` "longrope", "su" in older configs): two sets of per-frequency factors,
the short ones for sequences within ``original_max_position_embeddings`` and the long ones past it, and
cos/sin scaled by an attention factor.

HF picks the set once per forward, by the largest position in it (``longrope_frequency_update``): a whole
prompt takes the set of its length, each decode step the set of its own position. Here every token of a
step takes the set its own sequence would get in HF's forward: the prompt's length for prompt tokens
(so a chunked or recomputed prompt takes one set, as HF's single forward over it), the token's position
for generated ones. Cached keys thus depend on whether the prompt is long: that is the model's
``prompt_variant``, so the prefix cache never shares short-rotated blocks with long prompts.

A sequence whose prompt was short and whose generation reaches original_max_position_embeddings + 1 tokens
is recomputed whole at that step, as HF's ``Phi3ForCausalLM.prepare_inputs_for_generation`` drops its cache
there: ``restart_length`` asks the scheduler to, and the recomputation's prompt (all its tokens, now past the
original context) takes the long factors for every key.
"""
from __future__ import annotations

from typing import Optional

import torch

from mii_core.batch import RaggedBatch
from mii_core.model.rotary import per_token
from mii_core.model.spec import DecoderSpec

LONG_PROMPT = 1  # the prompt_variant of prompts past original_max_position_embeddings


class LongRopeRotary:
    """A ``DecoderParts.rotary`` part built from ``spec.rope.params``: ``short_factor``, ``long_factor``
    (rotary_dim / 2 numbers each), ``original_max_position_embeddings`` and ``attention_factor``."""

    def __init__(self, spec: DecoderSpec, device: torch.device):
        rope = spec.rope
        self.rotary_dim = rope.rotary_dim or spec.head_dim
        self.original_max = rope.params["original_max_position_embeddings"]
        self.attention_factor = rope.params["attention_factor"]
        # HF's order: 1 / (factor * base ** (2i / dim)), in float32
        exponents = torch.arange(0, self.rotary_dim, 2, dtype=torch.int64).float() / self.rotary_dim
        base_powers = rope.theta ** exponents
        self.short_inv_freq = self._inv_freq(rope.params["short_factor"], base_powers, device)
        self.long_inv_freq = self._inv_freq(rope.params["long_factor"], base_powers, device)

    @staticmethod
    def _inv_freq(factors: list[float], base_powers: torch.Tensor, device: torch.device) -> torch.Tensor:
        return (1.0 / (torch.tensor(factors, dtype=torch.float32) * base_powers)).to(device)[None, :]

    def prompt_variant(self, prompt_length: int) -> Optional[int]:
        return LONG_PROMPT if prompt_length > self.original_max else None

    def restart_length(self, prompt_length: int) -> Optional[int]:
        """A short prompt's cache is recomputed with the long factors once the sequence outgrows the original
        context (the model's ``restart_length`` hook); a long prompt's keys are long already."""
        return self.original_max + 1 if prompt_length <= self.original_max else None

    def tables(self, batch: RaggedBatch, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) [T, rotary_dim]: angles and the attention factor in float32, then cast (HF's order)."""
        prompt_lens = per_token(batch.prompt_lens, batch)
        # HF's seq_len: the prompt's length for prompt tokens, position + 1 for generated ones
        forward_length = torch.maximum(prompt_lens, batch.positions + 1)
        inv_freq = torch.where((forward_length > self.original_max)[:, None], self.long_inv_freq,
                               self.short_inv_freq)
        freqs = batch.positions.float()[:, None] * inv_freq
        angles = torch.cat((freqs, freqs), dim=-1)
        return ((angles.cos() * self.attention_factor).to(dtype),
                (angles.sin() * self.attention_factor).to(dtype))
