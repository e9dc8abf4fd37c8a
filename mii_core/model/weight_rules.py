"""Weight rules: where each checkpoint tensor goes in the engine model, and how it is reshaped on the way.

A plugin declares ``weight_rules = {checkpoint pattern: rule}``. Patterns name the checkpoint tensor with
placeholders ``{i}`` (layer index) and ``{e}`` (expert index); a rule is an engine parameter name, a
``(name, shard)`` pair for one part of a fused parameter, or a :class:`Rule` when the tensor must be
transposed (GPT-2's Conv1D stores [in, out]) or reordered (``transform``) first. A fused checkpoint
tensor (q|k|v, gate|up) mapped with no shard is split by the parameter into its parts.
:func:`module_rules` writes the ``.weight`` / ``.bias`` entries of a table from module names.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch

from mii_core.model.parameters import ShardId
from mii_core.model.spec import DecoderSpec

Transform = Callable[[torch.Tensor, DecoderSpec], torch.Tensor]


@dataclass(frozen=True, slots=True)
class Rule:
    target: str                   # engine parameter name; may use the pattern's {i} / {e}
    shard: ShardId = None         # part of a fused parameter ("q", "gate", "{e}.up"); None: the whole
    transpose: bool = False       # the checkpoint stores the matrix as [in, out]
    transform: Optional[Transform] = None  # applied before loading (after transpose), e.g. un-interleave q/k/v


WeightRule = Union[str, tuple[str, ShardId], Rule]


@dataclass(frozen=True, slots=True)
class WeightTarget:
    param_name: str
    shard_id: ShardId
    rule: Rule
    checkpoint_name: str = ""  # the name the rule matched, with the checkpoint prefix (as expand() lists it)

    def prepare(self, tensor: torch.Tensor, spec: DecoderSpec) -> torch.Tensor:
        if self.rule.transpose:
            if tensor.dim() != 2:
                raise ValueError(f"a transpose rule needs a matrix, got shape {tuple(tensor.shape)}")
            tensor = tensor.t()
        if self.rule.transform is None:
            return tensor
        # A transform reorders rows across the whole tensor, so no slice read is possible: the lazy
        # checkpoint view (mii_core.loading.slices) is read whole first, so that the transform gets a plain
        # tensor (``t + 1`` works), and the parameter's loader keeps its rank's slice of the result.
        whole = tensor.read() if hasattr(tensor, "read") else tensor
        try:
            result = self.rule.transform(whole, spec)
        except Exception as exc:
            raise ValueError(f"the transform of the weight rule for checkpoint tensor '{self.checkpoint_name}' "
                             f"(-> '{self.param_name}') failed on its tensor of shape {tuple(whole.shape)} "
                             f"({whole.dtype}): {type(exc).__name__}: {exc}") from exc
        if not isinstance(result, torch.Tensor):
            raise ValueError(f"the transform of the weight rule for checkpoint tensor '{self.checkpoint_name}' "
                             f"(-> '{self.param_name}') returned a {type(result).__name__}, not a tensor")
        return result


def module_rules(modules: Mapping[str, WeightRule], parts: Iterable[str] = ("weight", "bias"),
                 prefix: str = "") -> dict[str, WeightRule]:
    """The table entries for each part (``"weight"``, ``"bias"``) of each module in ``modules``, a map of
    checkpoint module name (after ``prefix``) -> engine module name: ``"{prefix}{module}.{part}"`` maps to
    the engine name with ``.{part}`` added. A ``(name, shard)`` pair or a :class:`Rule` keeps its shard,
    transpose and transform for every part, e.g. ``module_rules({"ln_1": "layers.{i}.attn_norm",
    "attn.q_proj": ("layers.{i}.attn.qkv", "q")}, prefix="transformer.h.{i}.")`` gives
    ``"transformer.h.{i}.ln_1.weight": "layers.{i}.attn_norm.weight"`` and its ``.bias``, and
    ``"transformer.h.{i}.attn.q_proj.weight": ("layers.{i}.attn.qkv.weight", "q")`` and its ``.bias``.
    Entries come module by module, each module's parts in the order given. A bias the spec does not
    ask for is skipped on loading, so listing it costs nothing."""
    parts = (parts,) if isinstance(parts, str) else tuple(parts)  # "weight" alone means ("weight",), not letters
    if not parts or any(not isinstance(part, str) or not part for part in parts):
        raise ValueError(f"module_rules needs parts as non-empty names such as ('weight', 'bias'), got {parts!r}")
    return {f"{prefix}{module}.{part}": _with_part(engine, part) for module, engine in modules.items()
            for part in parts}


def _with_part(engine: WeightRule, part: str) -> WeightRule:
    """``engine`` (a module's rule) with ``.{part}`` added to its target, in the same form it came in."""
    if isinstance(engine, str):
        return f"{engine}.{part}"
    if isinstance(engine, Rule):
        return dataclasses.replace(engine, target=f"{engine.target}.{part}")
    if isinstance(engine, tuple) and len(engine) == 2 and isinstance(engine[0], str):
        return (f"{engine[0]}.{part}", engine[1])
    raise ValueError(f"module_rules maps a module to an engine module name, a (name, shard) pair or a Rule, "
                     f"got {engine!r}")


def as_rule(rule: WeightRule) -> Rule:
    if isinstance(rule, Rule):
        return rule
    if isinstance(rule, str):
        return Rule(rule)
    target, shard = rule
    return Rule(target, shard)


class RuleTable:
    """Compiled patterns; ``prefix`` is retried on names that lack it (hub checkpoints differ)."""

    def __init__(self, rules: dict[str, WeightRule], prefix: str = "") -> None:
        self.prefix = prefix
        self.rules = {pattern: as_rule(rule) for pattern, rule in rules.items()}
        self._compiled = [(re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>\\d+)", re.escape(p)) + "$"), r)
                          for p, r in self.rules.items()]

    def match(self, checkpoint_name: str) -> Optional[WeightTarget]:
        names = [checkpoint_name]
        if self.prefix and not checkpoint_name.startswith(self.prefix):
            names.append(self.prefix + checkpoint_name)
        for name in names:
            for pattern, rule in self._compiled:
                found = pattern.match(name)
                if found:
                    fill = found.groupdict()
                    shard = rule.shard.format(**fill) if isinstance(rule.shard, str) else rule.shard
                    return WeightTarget(rule.target.format(**fill), shard, rule, name)
        return None

    def expand(self, num_layers: int, num_experts: int) -> list[str]:
        """Every checkpoint name the patterns describe for this model size."""
        names = []
        for pattern in self.rules:
            layers = range(num_layers) if "{i}" in pattern else [0]
            experts = range(num_experts) if "{e}" in pattern else [0]
            names.extend(dict.fromkeys(pattern.format(i=i, e=e) for i in layers for e in experts))
        return names


def ungroup_qkv(tensor: torch.Tensor, spec: DecoderSpec) -> torch.Tensor:
    """A transform for fused q/k/v tensors stored per KV head group — each group's query heads, then its
    key head, then its value head — reordered to the [all q | all k | all v] rows the engine expects.
    One group per KV head: Falcon-40B (GQA); one group per head: GPT-NeoX, Bloom, Falcon-RW (MHA); a
    single group is already [q | k | v] (Falcon-7B's multi-query). Works on weights and biases alike."""
    groups, per_group = spec.num_kv_heads, spec.num_heads // spec.num_kv_heads
    rows = groups * (per_group + 2) * spec.head_dim
    if tensor.shape[0] != rows:
        raise ValueError(f"a grouped q/k/v tensor for {spec.num_heads} heads in {groups} KV groups of head size "
                         f"{spec.head_dim} needs {rows} rows, got shape {tuple(tensor.shape)}")
    grouped = tensor.reshape(groups, per_group + 2, spec.head_dim, *tensor.shape[1:])
    q, k, v = grouped[:, :per_group], grouped[:, per_group], grouped[:, per_group + 1]
    return torch.cat([part.reshape(-1, *tensor.shape[1:]) for part in (q, k, v)], dim=0)


def rotary_pairs_to_halves(tensor: torch.Tensor, spec: DecoderSpec) -> torch.Tensor:
    """A transform for q or k projection rows whose rotary features come in interleaved pairs (GPT-J's and
    CodeGen's rotate-every-two: pair (2i, 2i+1) turns by frequency i), reordered per head to the rotate-half
    layout the ``rotary_write_kv`` op uses (pair (i, i + rotary_dim/2) turns by frequency i): each head's
    first ``spec.rope.rotary_dim`` rows become [x0, x2, x4, ... | x1, x3, x5, ...], the rest stay. Queries
    and keys are permuted alike and the rotated features only ever meet in q·k, so every attention score
    equals the interleaved model's; values are not touched. Works on weights and biases alike."""
    head_dim = spec.head_dim
    rotary_dim = (spec.rope.rotary_dim if spec.rope is not None else None) or head_dim
    if tensor.shape[0] % head_dim or rotary_dim % 2 or rotary_dim > head_dim:
        raise ValueError(f"rotary_pairs_to_halves needs whole heads of {head_dim} rows and an even rotary_dim "
                         f"up to it; got shape {tuple(tensor.shape)} and rotary_dim {rotary_dim}")
    order = torch.cat([torch.arange(0, rotary_dim, 2), torch.arange(1, rotary_dim, 2),
                       torch.arange(rotary_dim, head_dim)])
    heads = tensor.reshape(tensor.shape[0] // head_dim, head_dim, *tensor.shape[1:])
    return heads[:, order].reshape(tensor.shape)
