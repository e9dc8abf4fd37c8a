"""One decoder layer, wired as the spec's ``layout`` says. Residual adds are fused into the norms
(the norm ops take the residual), so every layout threads ``(hidden, residual)`` through its layers.

Engine parameters of layer i: ``layers.{i}.attn_norm.*``, ``layers.{i}.attn.*``
(:class:`~mii_core.model.attention.Attention`), ``layers.{i}.mlp_norm.*`` (absent with a parallel
layout on one norm), ``layers.{i}.mlp.*`` (:mod:`~mii_core.model.mlp`, :mod:`~mii_core.model.moe`).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from mii_core.distributed.parallel_context import ParallelContext
from mii_core.model.deferred_norm import DeferredNorm, folds_into
from mii_core.model.ops import KernelOps
from mii_core.model.parts import DecoderParts
from mii_core.model.spec import DecoderSpec

Residual = Optional[torch.Tensor]


class DecoderLayer(nn.Module):
    """Its blocks come from ``parts`` (the core's by default, a family's where it supplies its own)."""

    def __init__(self, spec: DecoderSpec, ctx: ParallelContext, kernels: KernelOps, device: torch.device,
                 dtype: torch.dtype, layer_index: int = 0, parts: DecoderParts = DecoderParts()):
        super().__init__()
        self.layout = spec.layout
        self.attn_norm = parts.norm(spec, kernels, device, dtype)
        self.attn = parts.attention(spec, ctx, kernels, device, dtype, layer_index)
        self.mlp_norm = None
        if spec.layout != "parallel" or spec.parallel_norms == 2:
            self.mlp_norm = parts.norm(spec, kernels, device, dtype)
        self.mlp = parts.mlp(spec, ctx, kernels, device, dtype, layer_index)
        self.defers = (False, False)
        if spec.layout == "sequential":  # each norm's output goes straight into its block
            _feed(self.attn_norm, self.attn)
            _feed(self.mlp_norm, self.mlp)
            # whether each block's input linear computes its norm (a decode step's GEMV: deferred_norm.py)
            self.defers = (folds_into(self.attn_norm, self.attn), folds_into(self.mlp_norm, self.mlp))
        self._forward = {"sequential": self._sequential, "parallel": self._parallel,
                         "post_norm": self._post_norm}[spec.layout]

    def forward(self, hidden: torch.Tensor, residual: Residual, batch, rope, kv_cache) -> tuple[torch.Tensor, Residual]:
        """Returns (this layer's output, the residual stream before it); their sum is the hidden state."""
        return self._forward(hidden, residual, batch, rope, kv_cache)

    def _norm(self, norm: nn.Module, hidden: torch.Tensor, residual: Residual) -> tuple[torch.Tensor, torch.Tensor]:
        return (norm(hidden), hidden) if residual is None else norm(hidden, residual)

    def _sequential(self, hidden, residual, batch, rope, kv_cache):
        attn_out, residual = self._through(self.attn_norm, self.attn, self.defers[0], hidden, residual, batch, rope,
                                           kv_cache)
        return self._through(self.mlp_norm, self.mlp, self.defers[1], attn_out, residual)

    def _through(self, norm: nn.Module, block: nn.Module, defer: bool, hidden: torch.Tensor, residual: Residual,
                 *args) -> tuple[torch.Tensor, torch.Tensor]:
        """(block(norm(hidden [+ residual]), *args), the residual stream after the norm); with ``defer`` the
        block's input linear computes the norm (:class:`DeferredNorm`)."""
        if defer:
            deferred = DeferredNorm(norm, hidden, residual)
            return block(deferred, *args), deferred.summed()
        normed, residual = self._norm(norm, hidden, residual)
        return block(normed, *args), residual

    def _parallel(self, hidden, residual, batch, rope, kv_cache):
        normed, residual = self._norm(self.attn_norm, hidden, residual)
        mlp_in = normed if self.mlp_norm is None else self.mlp_norm(residual)
        return self.attn(normed, batch, rope, kv_cache) + self.mlp(mlp_in), residual

    def _post_norm(self, hidden, residual, batch, rope, kv_cache):
        # the residual stream is the normalised output: fold any pending residual in first
        if residual is not None:
            hidden = hidden + residual
        normed, _ = self.attn_norm(self.attn(hidden, batch, rope, kv_cache), hidden)
        out, _ = self.mlp_norm(self.mlp(normed), normed)
        return out, None


def _feed(norm: nn.Module, block: nn.Module) -> None:
    """Tells ``norm`` which linear its output goes into, where both sides offer it (a family's own norm or
    block may not: its input's absmax is then read by the linear's op, as before)."""
    linear = getattr(block, "input_linear", lambda: None)()
    if linear is not None and hasattr(norm, "feed"):
        norm.feed(linear)
