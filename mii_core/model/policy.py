"""What an architecture plugin declares: how an HF config becomes a DecoderSpec, and where weights go."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar, Optional, Union

import torch

from mii_core.model.decoder import DecoderModel
from mii_core.model.parallel import ParallelContext
from mii_core.model.spec import DecoderSpec

# checkpoint name pattern ("{i}" = layer index) -> engine parameter name, or (name, shard id)
WeightRule = Union[str, tuple[str, Union[int, str]]]


@dataclass(frozen=True, slots=True)
class WeightTarget:
    param_name: str
    shard_id: Union[int, str, None]


class ArchitecturePolicy:
    """Subclass per architecture. Most plugins set ``weight_rules`` and write ``build_spec``."""

    weight_rules: ClassVar[dict[str, WeightRule]] = {}
    ignored_weights: ClassVar[tuple[str, ...]] = (r".*rotary_emb\.inv_freq$",)

    def __init__(self, hf_config: dict[str, Any]) -> None:
        self.hf_config = hf_config
        self.spec = self.build_spec(hf_config)
        self._patterns = [(re.compile("^" + re.escape(k).replace(r"\{i\}", r"(\d+)") + "$"), v)
                          for k, v in self.weight_rules.items()]
        self._ignored = [re.compile(p) for p in self.ignored_weights]

    def build_spec(self, hf_config: dict[str, Any]) -> DecoderSpec:
        raise NotImplementedError

    def build_model(self, ctx: ParallelContext, kernels, device: torch.device, dtype: torch.dtype) -> DecoderModel:
        return DecoderModel(self.spec, ctx, kernels, device, dtype)

    def map_weight(self, checkpoint_name: str) -> Optional[WeightTarget]:
        """Where a checkpoint tensor goes; None for tensors the engine does not use."""
        if self.spec.tie_word_embeddings and checkpoint_name == "lm_head.weight":
            return None  # tied: the embedding already holds it
        for pattern, rule in self._patterns:
            match = pattern.match(checkpoint_name)
            if match:
                name, shard = (rule, None) if isinstance(rule, str) else rule
                return WeightTarget(name.replace("{i}", match.group(1)) if match.groups() else name, shard)
        return None

    def is_ignored(self, checkpoint_name: str) -> bool:
        return any(p.match(checkpoint_name) for p in self._ignored)

    def expected_weights(self) -> list[str]:
        """Every checkpoint name the model needs (used to report missing tensors by their HF name)."""
        names = []
        for pattern in self.weight_rules:
            layers = range(self.spec.num_layers) if "{i}" in pattern else [None]
            names.extend(pattern.replace("{i}", str(i)) for i in layers)
        return [n for n in names if self.map_weight(n) is not None]


def rope_spec_from_hf(hf_config: dict[str, Any]):
    """HF keeps rope settings in ``rope_scaling`` + ``rope_theta`` (v4) or ``rope_parameters`` (v5)."""
    from mii_core.model.spec import RopeSpec

    params = dict(hf_config.get("rope_parameters") or hf_config.get("rope_scaling") or {})
    theta = params.pop("rope_theta", hf_config.get("rope_theta", 10000.0))
    rope_type = params.pop("rope_type", params.pop("type", "default"))
    return RopeSpec(theta=float(theta), rope_type=rope_type, params=params)


def eos_ids_from_hf(hf_config: dict[str, Any]) -> tuple[int, ...]:
    eos = hf_config.get("eos_token_id")
    if eos is None:
        return ()
    return tuple(eos) if isinstance(eos, (list, tuple)) else (int(eos),)
