"""Rotary position embeddings: inverse frequencies for each HF rope_type, applied through the kernel op."""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from mii_core.batch import RaggedBatch
from mii_core.model.spec import RopeSpec


def _base_inv_freq(theta: float, dim: int) -> torch.Tensor:
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))


def _llama3_inv_freq(inv_freq: torch.Tensor, params: dict) -> torch.Tensor:
    """Llama-3.1 scaling: long wavelengths divided by ``factor``, short kept, a smooth ramp between."""
    factor, low, high = params["factor"], params.get("low_freq_factor", 1.0), params.get("high_freq_factor", 4.0)
    old_context = params["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old_context / low, old_context / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return torch.where(is_medium, smoothed, scaled)


def stepped_ntk_alpha(lengths: torch.Tensor, trained_length: int) -> torch.Tensor:
    """Qwen's ``get_ntk_alpha``: 1 up to the trained length, then 3, 7, 15, ... each time the length
    passes the next doubling of it (2 ** ceil(log2(length / trained) + 1) - 1). Float64 as Python's
    math.log, so the steps fall on exactly the same lengths."""
    steps = torch.ceil(torch.log2(lengths.to(torch.float64) / trained_length) + 1)
    return torch.clamp(2.0 ** steps - 1, min=1.0)


class RotaryEmbedding:
    """Holds the inverse frequencies; ``cos_sin`` gives the per-token tables for the op.

    ``dynamic`` NTK scaling stretches the base once a sequence outgrows the original context. HF applies
    one stretch to the whole batch; here each token uses its own position + 1 as the length, which is
    the same for a single sequence and stays independent of what else is in the batch.

    ``qwen_dynamic`` is Qwen (v1)'s NTK rule (``use_dynamic_ntk``), as modeling_qwen.py applies it: the
    base times alpha ** (d / (d - 2)), alpha from :func:`stepped_ntk_alpha` of the prompt's length, taken
    once when the sequence starts and kept for every token it generates (the batch's ``prompt_lens``).
    Keys enter the cache already rotated, so they keep the alpha they were written with. Prompts within
    ``original_max_position_embeddings`` (Qwen's ``seq_length``) get alpha 1: the default table.
    """

    def __init__(self, spec: RopeSpec, head_dim: int, max_position_embeddings: int, device: torch.device):
        self.spec = spec
        self.rotary_dim = spec.rotary_dim or head_dim
        self.max_positions = spec.params.get("original_max_position_embeddings", max_position_embeddings)
        inv_freq = _base_inv_freq(spec.theta, self.rotary_dim)
        if spec.rope_type == "linear":
            inv_freq = inv_freq / spec.params["factor"]
        elif spec.rope_type == "llama3":
            inv_freq = _llama3_inv_freq(inv_freq, spec.params)
        elif spec.rope_type not in ("default", "dynamic", "qwen_dynamic"):
            raise ValueError(f"rope_type '{spec.rope_type}' is not supported "
                             "(supported: default, linear, dynamic, llama3, qwen_dynamic)")
        self.inv_freq = inv_freq.to(device)[None, :]  # [1, rotary_dim // 2]

    @property
    def needs_prompt_lens(self) -> bool:
        """Whether a token's rotation depends on its sequence's prompt length, not on its position alone."""
        return self.spec.rope_type == "qwen_dynamic"

    def tables(self, batch: RaggedBatch, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The step's per-token tables; a rope that ignores prompt lengths costs no extra kernel."""
        prompt_lens = _per_token(batch.prompt_lens, batch) if self.needs_prompt_lens else None
        return self.cos_sin(batch.positions, dtype, prompt_lens)

    def cos_sin(self, positions: torch.Tensor, dtype: torch.dtype,
                prompt_lens: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token tables [T, rotary_dim] for the op, made once per step and shared by all layers;
        ``prompt_lens`` [T]: each token's sequence's prompt length (needed by ``qwen_dynamic`` only).
        Angles in float32 as HF computes them, then cast to the activations' dtype."""
        freqs = positions.float()[:, None] * self.inv_freq_for(positions, prompt_lens)
        angles = torch.cat((freqs, freqs), dim=-1)
        return angles.cos().to(dtype), angles.sin().to(dtype)

    def inv_freq_for(self, positions: torch.Tensor, prompt_lens: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.spec.rope_type == "qwen_dynamic":
            if prompt_lens is None:
                raise ValueError("rope_type 'qwen_dynamic' needs each token's prompt length")
            return self._qwen_ntk_inv_freq(prompt_lens)
        if self.spec.rope_type != "dynamic":
            return self.inv_freq
        factor, dim = self.spec.params["factor"], self.rotary_dim
        length = torch.clamp(positions.float() + 1, min=self.max_positions)[:, None]
        base = self.spec.theta * ((factor * length / self.max_positions) - (factor - 1)) ** (dim / (dim - 2))
        exponents = torch.arange(0, dim, 2, device=positions.device).float() / dim
        return 1.0 / base ** exponents[None, :]

    def _qwen_ntk_inv_freq(self, prompt_lens: torch.Tensor) -> torch.Tensor:
        dim = self.rotary_dim
        alpha = stepped_ntk_alpha(prompt_lens, self.max_positions)[:, None]
        # the stretched base in float64 as Qwen's Python arithmetic, then its float32 table
        base = (self.spec.theta * alpha ** (dim / (dim - 2))).float()
        exponents = torch.arange(0, dim, 2, device=prompt_lens.device).float() / dim
        stretched = 1.0 / base ** exponents[None, :]
        return torch.where(alpha == 1, self.inv_freq, stretched)  # unstretched tokens: the exact default table


def _per_token(per_seq: torch.Tensor, batch: RaggedBatch) -> torch.Tensor:
    """A per-sequence value [S] repeated for each of the sequence's new tokens [T], without a host sync."""
    num_tokens = batch.token_ids.shape[0]
    if num_tokens == per_seq.shape[0]:  # one token per sequence (every sequence has at least one)
        return per_seq
    return torch.repeat_interleave(per_seq, batch.query_lens, output_size=num_tokens)


def prompt_cache_key(rope: Optional[RopeSpec]) -> Optional[Callable[[int], Optional[int]]]:
    """For a rope whose cached keys depend on the prompt length as well as on the tokens (``qwen_dynamic``):
    a function from a prompt length to what must key its KV blocks besides the tokens (None where the
    rotation is the default one, so those blocks are shared with every other such prompt). None for every
    other rope."""
    if rope is None or rope.rope_type != "qwen_dynamic":
        return None
    trained = rope.params["original_max_position_embeddings"]

    def key(prompt_length: int) -> Optional[int]:
        alpha = int(stepped_ntk_alpha(torch.tensor([prompt_length]), trained).item())
        return None if alpha == 1 else alpha

    return key
