"""What an architecture plugin declares: how an HF config becomes a DecoderSpec, and where weights go."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Optional, Union

import torch

from mii_core.distributed.parallel_context import ParallelContext
from mii_core.model.decoder import DecoderModel
from mii_core.model.spec import DecoderSpec
from mii_core.model.weight_rules import RuleTable, WeightRule, WeightTarget


class ArchitecturePolicy:
    """Subclass per architecture: set ``weight_rules`` (see :mod:`mii_core.model.weight_rules`; a property
    reading ``self.spec`` where the checkpoint's names depend on the config) and write
    ``build_spec`` (read required fields as ``hf[...]``: a missing one is reported as a ValueError naming
    config.json and the field). ``checkpoint_prefix`` is the prefix the rules' names carry (``"model."``,
    ``"transformer."``) that some checkpoints of the family leave out; such names are matched with it added.
    Override ``build_model`` only for a model the generic decoder cannot express (its contract is in
    :mod:`mii_core.model.decoder`)."""

    weight_rules: ClassVar[dict[str, WeightRule]] = {}
    checkpoint_prefix: ClassVar[str] = ""
    ignored_weights: ClassVar[tuple[str, ...]] = (r".*rotary_emb\.inv_freq$",)

    def __init__(self, hf_config: dict[str, Any]) -> None:
        self.hf_config = hf_config
        try:
            self.spec = self.build_spec(hf_config)
        except KeyError as missing:  # build_spec reads required fields as hf[...]: say which one is absent
            if isinstance(missing, ValueError):  # the loader's config already says it (file and field)
                raise ValueError(str(missing)) from None
            raise ValueError(f"config.json has no '{missing.args[0]}' field, which a "
                             f"'{hf_config.get('model_type')}' model needs; add it to config.json") from None
        self.rules = RuleTable(self.weight_rules, self.checkpoint_prefix)
        self._ignored = [re.compile(p) for p in self.ignored_weights]

    def build_spec(self, hf_config: dict[str, Any]) -> DecoderSpec:
        raise NotImplementedError

    def build_model(self, ctx: ParallelContext, kernels, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        return DecoderModel(self.spec, ctx, kernels, device, dtype)

    def load_tokenizer(self, path: Union[str, Path]) -> Optional[Any]:
        """The tokenizer for the checkpoint folder ``path``, or None (the default) for ``AutoTokenizer``.
        Override for a family whose checkpoints ship their tokenizer as remote code (Qwen's
        ``qwen.tiktoken``). The object must offer what the core calls: ``tokenizer(text)["input_ids"]``,
        ``decode(ids, skip_special_tokens=True)`` and ``eos_token_id``."""
        return None

    def map_weight(self, checkpoint_name: str) -> Optional[WeightTarget]:
        """Where a checkpoint tensor goes; None for tensors the engine does not use."""
        target = self.rules.match(checkpoint_name)
        if target is not None and self.spec.tie_word_embeddings and target.param_name == "lm_head.weight":
            return None  # tied: the embedding already holds it
        return target

    def is_ignored(self, checkpoint_name: str) -> bool:
        return any(p.match(checkpoint_name) for p in self._ignored)

    def expected_weights(self) -> list[str]:
        """Every checkpoint name the model needs (used to report missing tensors by their HF name)."""
        experts = self.spec.moe.num_experts if self.spec.moe is not None else 0
        names = self.rules.expand(self.spec.num_layers, experts)
        return [n for n in names if self.map_weight(n) is not None]

