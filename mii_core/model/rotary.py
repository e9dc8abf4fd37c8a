"""Rotary position embeddings: inverse frequencies for the HF rope types every family shares, applied
through the kernel op."""
from __future__ import annotations

import math
from typing import Optional

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


class RotaryEmbedding:
    """The default rotary part of a decoder: holds the inverse frequencies; ``tables`` gives the per-token
    tables for the op, from each token's position alone.

    ``dynamic`` NTK scaling stretches the base once a sequence outgrows the original context. HF applies
    one stretch to the whole batch; here each token uses its own position + 1 as the length, which is
    the same for a single sequence and stays independent of what else is in the batch.

    A family whose rotation depends on more than the position (a per-sequence fact of the batch, such as
    ``prompt_lens``) subclasses this in its plugin, overriding ``tables`` and ``prompt_variant``.
    """

    ROPE_TYPES = ("default", "linear", "dynamic", "llama3")

    def __init__(self, spec: RopeSpec, head_dim: int, max_position_embeddings: int, device: torch.device):
        self.spec = spec
        self.rotary_dim = spec.rotary_dim or head_dim
        self.max_positions = spec.params.get("original_max_position_embeddings", max_position_embeddings)
        inv_freq = _base_inv_freq(spec.theta, self.rotary_dim)
        if spec.rope_type == "linear":
            inv_freq = inv_freq / spec.params["factor"]
        elif spec.rope_type == "llama3":
            inv_freq = _llama3_inv_freq(inv_freq, spec.params)
        elif spec.rope_type not in self.ROPE_TYPES:
            raise ValueError(f"rope_type '{spec.rope_type}' is not supported by the core's rotary embedding "
                             f"(supported: {', '.join(self.ROPE_TYPES)}); a family with a rope of its own "
                             "supplies its rotary part (DecoderParts.rotary)")
        self.inv_freq = inv_freq.to(device)[None, :]  # [1, rotary_dim // 2]

    def prompt_variant(self, prompt_length: int) -> Optional[int]:
        """What a sequence's cached keys depend on besides its tokens, from its prompt length (the model's
        ``prompt_variant`` hook, see mii_core/model/decoder.py); None: the tokens alone (every core rope)."""
        return None

    def tables(self, batch: RaggedBatch, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The step's per-token tables [T, rotary_dim], made once per step and shared by all layers."""
        return self.cos_sin(batch.positions, dtype)

    def cos_sin(self, positions: torch.Tensor, dtype: torch.dtype,
                inv_freq: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token tables [T, rotary_dim] for the op; ``inv_freq`` [1 or T, rotary_dim // 2] (default: this
        rope's for each position). Angles in float32 as HF computes them, then cast to the activations' dtype."""
        if inv_freq is None:
            inv_freq = self.inv_freq_for(positions)
        freqs = positions.float()[:, None] * inv_freq
        angles = torch.cat((freqs, freqs), dim=-1)
        return angles.cos().to(dtype), angles.sin().to(dtype)

    def inv_freq_for(self, positions: torch.Tensor) -> torch.Tensor:
        if self.spec.rope_type != "dynamic":
            return self.inv_freq
        factor, dim = self.spec.params["factor"], self.rotary_dim
        length = torch.clamp(positions.float() + 1, min=self.max_positions)[:, None]
        base = self.spec.theta * ((factor * length / self.max_positions) - (factor - 1)) ** (dim / (dim - 2))
        exponents = torch.arange(0, dim, 2, device=positions.device).float() / dim
        return 1.0 / base ** exponents[None, :]


def per_token(per_seq: torch.Tensor, batch: RaggedBatch) -> torch.Tensor:
    """A per-sequence value [S] repeated for each of the sequence's new tokens [T], without a host sync."""
    num_tokens = batch.token_ids.shape[0]
    if num_tokens == per_seq.shape[0]:  # one token per sequence (every sequence has at least one)
        return per_seq
    return torch.repeat_interleave(per_seq, batch.query_lens, output_size=num_tokens)
