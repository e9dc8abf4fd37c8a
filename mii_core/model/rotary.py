"""Rotary position embeddings: inverse frequencies for each HF rope_type, applied through the kernel op."""
from __future__ import annotations

import math

import torch

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
    """Holds the inverse frequencies; ``inv_freq_for(positions)`` gives the per-token table for the op.

    ``dynamic`` NTK scaling stretches the base once a sequence outgrows the original context. HF applies
    one stretch to the whole batch; here each token uses its own position + 1 as the length, which is
    the same for a single sequence and stays independent of what else is in the batch.

    ``qwen_dynamic`` is Qwen (v1)'s NTK rule (``use_dynamic_ntk``): the base times alpha ** (d / (d - 2))
    with alpha from :func:`stepped_ntk_alpha` of the sequence length when the token is processed, taken
    here as the token's position + 1 (keys enter the cache already rotated). A token's rotation then
    never depends on prompt chunking, preemption or a shared prefix block. modeling_qwen.py instead
    takes the length of the whole prompt at prefill and keeps that alpha for the generated tokens: the
    two agree while the sequence is within ``original_max_position_embeddings`` (Qwen's ``seq_length``,
    alpha 1) and differ past it.
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

    def cos_sin(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token tables [T, rotary_dim] for the op, made once per step and shared by all layers.
        Angles in float32 as HF computes them, then cast to the activations' dtype."""
        freqs = positions.float()[:, None] * self.inv_freq_for(positions)
        angles = torch.cat((freqs, freqs), dim=-1)
        return angles.cos().to(dtype), angles.sin().to(dtype)

    def inv_freq_for(self, positions: torch.Tensor) -> torch.Tensor:
        if self.spec.rope_type == "qwen_dynamic":
            return self._qwen_ntk_inv_freq(positions)
        if self.spec.rope_type != "dynamic":
            return self.inv_freq
        factor, dim = self.spec.params["factor"], self.rotary_dim
        length = torch.clamp(positions.float() + 1, min=self.max_positions)[:, None]
        base = self.spec.theta * ((factor * length / self.max_positions) - (factor - 1)) ** (dim / (dim - 2))
        exponents = torch.arange(0, dim, 2, device=positions.device).float() / dim
        return 1.0 / base ** exponents[None, :]

    def _qwen_ntk_inv_freq(self, positions: torch.Tensor) -> torch.Tensor:
        dim = self.rotary_dim
        alpha = stepped_ntk_alpha(positions + 1, self.max_positions)[:, None]
        # the stretched base in float64 as Qwen's Python arithmetic, then its float32 table
        base = (self.spec.theta * alpha ** (dim / (dim - 2))).float()
        exponents = torch.arange(0, dim, 2, device=positions.device).float() / dim
        stretched = 1.0 / base ** exponents[None, :]
        return torch.where(alpha == 1, self.inv_freq, stretched)  # unstretched tokens: the exact default table
