"""Weight-rule transforms moving DeepSeek-V2's rotary features to where the ``rotary_write_kv`` op rotates
them: first in each head, in rotate-half order. HF rotates neighbouring pairs (2i, 2i + 1) by frequency i
(its complex ``apply_rotary_emb``); the op rotates features i and i + rotary_dim/2 by frequency i, so the
pairs' rows become [x0, x2, x4, ... | x1, x3, x5, ...]. Queries and keys move alike and only ever meet in
q·k, so every attention score is unchanged."""
from __future__ import annotations

import torch

from mii_core.model.spec import DecoderSpec


def _halves_order(rotary_dim: int) -> torch.Tensor:
    return torch.cat([torch.arange(0, rotary_dim, 2), torch.arange(1, rotary_dim, 2)])


def rope_first_per_head(tensor: torch.Tensor, spec: DecoderSpec) -> torch.Tensor:
    """``q_proj`` / ``q_b_proj`` rows, per head [nope | rope pairs], reordered to [rope halves | nope]."""
    rotary_dim = spec.rope.rotary_dim
    if tensor.shape[0] % spec.num_heads:
        raise ValueError(f"query rows must split into {spec.num_heads} heads, got shape {tuple(tensor.shape)}")
    head_dim = tensor.shape[0] // spec.num_heads
    nope_dim = head_dim - rotary_dim
    order = torch.cat([nope_dim + _halves_order(rotary_dim), torch.arange(nope_dim)])
    heads = tensor.reshape(spec.num_heads, head_dim, *tensor.shape[1:])
    return heads[:, order].reshape(tensor.shape)


def rope_key_to_halves(tensor: torch.Tensor, spec: DecoderSpec) -> torch.Tensor:
    """``kv_a_proj_with_mqa`` rows [latent | rope key pairs] (weight or bias): the rope key's rows reordered."""
    rotary_dim = spec.rope.rotary_dim
    latent_dim = tensor.shape[0] - rotary_dim
    return tensor[torch.cat([torch.arange(latent_dim), latent_dim + _halves_order(rotary_dim)])]
