"""Qwen (v1)'s dynamic NTK rope (``use_dynamic_ntk``), as modeling_qwen.py applies it: the rotary base times
alpha ** (d / (d - 2)), alpha from :func:`stepped_ntk_alpha` of the prompt's length, taken once when the
sequence starts and kept for every token it generates (the batch's ``prompt_lens``, fixed at admission).
Keys enter the cache already rotated, so they keep the alpha they were written with; the model's
``prompt_variant`` hook hands the alpha to the prefix cache, so only prompts of one alpha share blocks.
Prompts within ``original_max_position_embeddings`` (Qwen's ``seq_length``) get alpha 1: the default table.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

import torch

from mii_core.batch import RaggedBatch
from mii_core.model.rotary import RotaryEmbedding, per_token
from mii_core.model.spec import RopeSpec

ROPE_TYPE = "qwen_dynamic"  # this family's rope type in its DecoderSpec; the core's rotary part refuses it


def stepped_ntk_alpha(lengths: torch.Tensor, trained_length: int) -> torch.Tensor:
    """Qwen's ``get_ntk_alpha``: 1 up to the trained length, then 3, 7, 15, ... each time the length
    passes the next doubling of it (2 ** ceil(log2(length / trained) + 1) - 1). Float64 as Python's
    math.log, so the steps fall on exactly the same lengths."""
    steps = torch.ceil(torch.log2(lengths.to(torch.float64) / trained_length) + 1)
    return torch.clamp(2.0 ** steps - 1, min=1.0)


class QwenRotaryEmbedding(RotaryEmbedding):
    """A rotary part (``DecoderParts.rotary``) whose tables depend on each sequence's prompt length."""

    def __init__(self, spec: RopeSpec, head_dim: int, max_position_embeddings: int, device: torch.device):
        if spec.rope_type != ROPE_TYPE:
            raise ValueError(f"QwenRotaryEmbedding serves rope_type '{ROPE_TYPE}', not '{spec.rope_type}'")
        super().__init__(replace(spec, rope_type="default"), head_dim, max_position_embeddings, device)
        self.spec = spec
        self.trained_length = spec.params["original_max_position_embeddings"]

    def prompt_variant(self, prompt_length: int) -> Optional[int]:
        """The prompt's alpha, or None for alpha 1 (those blocks hold the default rotation)."""
        alpha = int(stepped_ntk_alpha(torch.tensor([prompt_length]), self.trained_length).item())
        return None if alpha == 1 else alpha

    def tables(self, batch: RaggedBatch, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        prompt_lens = per_token(batch.prompt_lens, batch)
        return self.cos_sin(batch.positions, dtype, self.ntk_inv_freq(prompt_lens))

    def ntk_inv_freq(self, prompt_lens: torch.Tensor) -> torch.Tensor:
        """Per token [T, rotary_dim // 2]: the inverse frequencies of the alpha of its prompt length."""
        dim = self.rotary_dim
        alpha = stepped_ntk_alpha(prompt_lens, self.trained_length)[:, None]
        # the stretched base in float64 as Qwen's Python arithmetic, then its float32 table
        base = (self.spec.theta * alpha ** (dim / (dim - 2))).float()
        exponents = torch.arange(0, dim, 2, device=prompt_lens.device).float() / dim
        stretched = 1.0 / base ** exponents[None, :]
        return torch.where(alpha == 1, self.inv_freq, stretched)  # unstretched tokens: the exact default table


