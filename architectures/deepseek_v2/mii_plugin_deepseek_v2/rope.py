"""DeepSeek-V2's rotary embedding: on the ``qk_rope_head_dim`` rotary features of each head only, plain or
YaRN-scaled (``rope_scaling`` / ``rope_parameters`` type "yarn"), computed as transformers'
``_compute_yarn_parameters`` and ``DeepseekV2RotaryEmbedding`` do: the inverse frequencies blended between
interpolation and extrapolation by a linear ramp over the correction range, cos and sin times the attention
factor, and the softmax scale times mscale(factor, mscale_all_dim)² (``yarn_apply_mscale``).

HF rotates pairs of neighbouring features (2i, 2i + 1) by frequency i, in float32 with float32 tables, and
casts the result once (``apply_rotary_emb``); :func:`rotate_pairs` does the same, so that bf16 and fp16 runs
round as HF's do (the ``rotary_write_kv`` op takes tables in the activations' dtype)."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import torch

from mii_core.batch import RaggedBatch
from mii_core.model.hf_common import rope_spec_from_hf
from mii_core.model.rotary import RotaryEmbedding
from mii_core.model.spec import DecoderSpec, RopeSpec

from mii_plugin_deepseek_v2.config import refuse

ROPE_TYPES = ("default", "yarn")


def rope_spec(hf: dict[str, Any], rotary_dim: int) -> RopeSpec:
    """The rope on ``rotary_dim`` features; for YaRN every parameter resolved with HF's defaults."""
    rope = dataclasses.replace(rope_spec_from_hf(hf), rotary_dim=rotary_dim)
    if rope.rope_type not in ROPE_TYPES:
        raise refuse("rope type", rope.rope_type, f"supported: {', '.join(ROPE_TYPES)}")
    partial = rope.params.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))
    if partial not in (None, 1, 1.0):  # the rotary part is qk_rope_head_dim already
        raise refuse("partial_rotary_factor", partial, "the rope covers all qk_rope_head_dim features; remove it")
    if rope.rope_type == "default":
        return dataclasses.replace(rope, params={})
    params = dict(rope.params)
    max_positions = hf.get("max_position_embeddings", 2048)
    # HF: a top-level original_max_position_embeddings wins, then the rope's own, then max_position_embeddings
    original = hf.get("original_max_position_embeddings") or params.get("original_max_position_embeddings") \
        or max_positions
    factor = params.get("factor")
    if factor is None:
        raise refuse("rope_scaling.factor", None, "YaRN needs its scaling factor")
    mscale, mscale_all_dim = params.get("mscale"), params.get("mscale_all_dim")
    attention_factor = params.get("attention_factor")
    if attention_factor is None:
        attention_factor = (yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim)
                            if mscale and mscale_all_dim else yarn_mscale(factor))
    params = {"factor": float(factor), "original_max_position_embeddings": original,
              "beta_fast": params.get("beta_fast") or 32, "beta_slow": params.get("beta_slow") or 1,
              "truncate": params.get("truncate", True), "attention_factor": float(attention_factor),
              "mscale_all_dim": mscale_all_dim or 0}
    return dataclasses.replace(rope, params=params)


def yarn_mscale(scale: float, mscale: float = 1) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def softmax_scale(qk_head_dim: int, rope: RopeSpec) -> float:
    """1/√(qk_head_dim), times mscale(factor, mscale_all_dim)² under a scaled rope (HF's ``yarn_apply_mscale``)."""
    scale = qk_head_dim ** (-0.5)
    mscale_all_dim = rope.params.get("mscale_all_dim")
    if rope.rope_type != "default" and mscale_all_dim:
        mscale = yarn_mscale(rope.params["factor"], mscale_all_dim)
        scale = scale * mscale * mscale
    return scale


def yarn_inv_freq(rope: RopeSpec) -> torch.Tensor:
    """[rotary_dim // 2] float32, in HF's order of operations."""
    dim, base, params = rope.rotary_dim, rope.theta, rope.params
    low, high = _correction_range(params, dim, base)
    pos_freqs = base ** (torch.arange(0, dim, 2).to(dtype=torch.float) / dim)
    extrapolation, interpolation = 1.0 / pos_freqs, 1.0 / (params["factor"] * pos_freqs)
    if low == high:
        high += 0.001  # HF: no singular ramp
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    extrapolation_share = 1 - ramp
    return interpolation * (1 - extrapolation_share) + extrapolation * extrapolation_share


def _correction_range(params: dict[str, Any], dim: int, base: float) -> tuple[float, float]:
    """The rotary dims between which YaRN blends: those turning beta_fast and beta_slow times over the
    original context (floored / ceiled when ``truncate``), clipped to [0, dim - 1]."""
    def dim_of(rotations: float) -> float:
        return (dim * math.log(params["original_max_position_embeddings"] / (rotations * 2 * math.pi))) / \
            (2 * math.log(base))
    low, high = dim_of(params["beta_fast"]), dim_of(params["beta_slow"])
    if params["truncate"]:
        low, high = math.floor(low), math.ceil(high)
    return max(low, 0), min(high, dim - 1)


class LatentRotary:
    """The ``DecoderParts.rotary`` part of this family: float32 (cos, sin) [T, rotary_dim / 2], one angle per
    pair, times YaRN's attention factor (1 for the default rope), from each token's position alone (so
    ``prompt_variant`` is None). Only :class:`~mii_plugin_deepseek_v2.attention.LatentAttention` reads them."""

    def __init__(self, spec: DecoderSpec, device: torch.device):
        rope = spec.rope
        if rope.rope_type == "yarn":
            self.inv_freq = yarn_inv_freq(rope).to(device)[None, :]
            self.attention_factor = rope.params["attention_factor"]
        else:  # HF's default rope: the core's frequencies, [1, rotary_dim / 2]
            self.inv_freq = RotaryEmbedding(rope, spec.head_dim, spec.max_position_embeddings, device).inv_freq
            self.attention_factor = 1.0

    def prompt_variant(self, prompt_length: int) -> Optional[int]:
        return None

    def tables(self, batch: RaggedBatch, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 whatever ``dtype`` (HF's freqs_cis): the rotation runs in float32."""
        freqs = batch.positions.float()[:, None] * self.inv_freq
        return freqs.cos() * self.attention_factor, freqs.sin() * self.attention_factor


def rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x`` [..., rotary_dim] whose pairs (2i, 2i + 1) turn by angle i (``cos``/``sin`` [..., rotary_dim / 2]
    float32, broadcast), computed in float32 and cast back to x's dtype, as HF's complex product."""
    pairs = x.float().unflatten(-1, (-1, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2).to(x.dtype)
