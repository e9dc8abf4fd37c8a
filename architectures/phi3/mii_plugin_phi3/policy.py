"""Phi-3 / Phi-3.5 as a declaration: Llama's layout with q, k and v in one ``qkv_proj`` tensor and gate and
up in one ``gate_up_proj`` ([gate | up]), RMSNorm, no biases, an optional sliding window on every layer
(Phi-3-mini-4k: 2047), partial rotary (``partial_rotary_factor``) and LongRoPE scaling (``longrope``, or
``su`` / ``yarn`` which HF's Phi3Config reads as longrope) through this plugin's rotary part."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from mii_core.distributed.parallel_context import ParallelContext
from mii_core.model.decoder import DecoderModel
from mii_core.model.hf_common import LAYER, decoder_spec, partial_rope_spec
from mii_core.model.parts import DecoderParts
from mii_core.model.policy import ArchitecturePolicy
from mii_core.model.spec import DecoderSpec, RopeSpec
from mii_core.model.weight_rules import module_rules
from mii_plugin_phi3.rope import LongRopeRotary

LONGROPE_NAMES = ("longrope", "su", "yarn")  # Phi3Config renames su and yarn to longrope
DEFAULT_ORIGINAL_MAX = 4096  # Phi3Config's original_max_position_embeddings when config.json has none


class Phi3Policy(ArchitecturePolicy):
    # no biases anywhere: Phi3's projections have none and its norms are RMSNorms
    weight_rules = (
        module_rules({"model.embed_tokens": "embed", "model.norm": "final_norm", "lm_head": "lm_head"}, parts="weight")
        | module_rules(parts="weight", prefix=LAYER, modules={
            "input_layernorm": "layers.{i}.attn_norm", "post_attention_layernorm": "layers.{i}.mlp_norm",
            "self_attn.qkv_proj": "layers.{i}.attn.qkv",  # [q | k | v]: split on loading
            "self_attn.o_proj": "layers.{i}.attn.o_proj",
            "mlp.gate_up_proj": "layers.{i}.mlp.up",  # [gate | up]: split on loading
            "mlp.down_proj": "layers.{i}.mlp.down",
        })
    )

    def build_spec(self, hf: dict[str, Any]) -> DecoderSpec:
        # Phi3 reads no attention_bias / mlp_bias: its projections never have biases
        spec = decoder_spec(hf, rope=None, norm_eps=hf.get("rms_norm_eps", 1e-5),
                            max_position_embeddings=hf.get("max_position_embeddings", 4096),
                            qkv_bias=False, o_bias=False, mlp_bias=False, sliding_window=hf.get("sliding_window"))
        return dataclasses.replace(spec, rope=_rope(hf, spec.head_dim))

    def build_model(self, ctx: ParallelContext, kernels, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        parts = DecoderParts(rotary=LongRopeRotary) if self.spec.rope.rope_type == "longrope" else DecoderParts()
        return DecoderModel(self.spec, ctx, kernels, device, dtype, parts)


def _rope(hf: dict[str, Any], head_dim: int) -> RopeSpec:
    """The default rope, or LongRoPE with its factors checked and HF's defaults filled in."""
    rope = partial_rope_spec(hf, head_dim, default_factor=1.0)
    if rope.rope_type == "default":
        return rope
    if rope.rope_type not in LONGROPE_NAMES:
        raise ValueError(f"phi3: rope type '{rope.rope_type}' is not supported (Phi3Config accepts default and "
                         f"longrope / su); fix rope_scaling / rope_parameters in config.json")
    half = rope.rotary_dim // 2
    for name in ("short_factor", "long_factor"):
        factors = rope.params.get(name)
        if not isinstance(factors, list) or len(factors) != half:
            raise ValueError(f"phi3: longrope needs rope_scaling.{name}: a list of {half} numbers (rotary dims / 2), "
                             f"got {factors!r}; fix config.json")
    # HF puts the top-level field (default 4096) into the rope parameters, over any value already there
    original_max = hf.get("original_max_position_embeddings", DEFAULT_ORIGINAL_MAX)
    factor = rope.params.get("factor")
    if factor is None:  # HF: the ratio of the two context lengths
        factor = hf.get("max_position_embeddings", 4096) / original_max
    attention_factor = rope.params.get("attention_factor")
    if attention_factor is None:
        attention_factor = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original_max))
    params = {"short_factor": rope.params["short_factor"], "long_factor": rope.params["long_factor"],
              "original_max_position_embeddings": original_max, "attention_factor": attention_factor}
    return dataclasses.replace(rope, rope_type="longrope", params=params)
