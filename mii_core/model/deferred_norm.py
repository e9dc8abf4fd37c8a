"""A norm whose output is computed by the linear it feeds: the decode step's RMSNorm folded into the GEMV after it.

At batch 1 a GEMV program reads the whole input row anyway, so it can add the residual, take the row's mean
square and normalise each chunk as it reads it (the kernels' ``rms_norm_linear`` / ``rms_norm_quant_linear``):
no normalised tensor is written or read and a layer launches two kernels fewer. The layer hands its block a
:class:`DeferredNorm` in place of the normalised tensor; the block's declared input linear (``input_linear``)
consumes it. It is not a tensor: a block that reads it any other way fails loudly rather than computing with
values that do not exist yet. Where the fused op has no path (more tokens than a GEMV takes, another layout)
the norm runs as it always does, its absmax hand-over included, and the linear multiplies its output.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn


class DeferredNorm:
    """``norm(hidden [+ residual])`` not computed yet; :meth:`summed` is the residual stream after it, known once
    a linear has taken it (:meth:`fold_into`)."""

    def __init__(self, norm: nn.Module, hidden: torch.Tensor, residual: Optional[torch.Tensor]) -> None:
        self.norm, self.hidden, self.residual = norm, hidden, residual
        self.normed: Optional[torch.Tensor] = None  # set where the norm ran by itself
        self._summed: Optional[torch.Tensor] = None

    # what a block may read of its input before multiplying it: the normalised tensor's shape, dtype, device
    @property
    def shape(self) -> torch.Size:
        return self.hidden.shape

    @property
    def dtype(self) -> torch.dtype:
        return self.hidden.dtype

    @property
    def device(self) -> torch.device:
        return self.hidden.device

    def fold_into(self, fused) -> Optional[torch.Tensor]:
        """The linear's output through ``fused(hidden, residual, norm weight, eps)`` (the kernel set's fused op,
        the linear's weight and bias bound); None where it returns ``NotImplemented``: the norm has then run by
        itself (:attr:`normed`, its absmax handed on as usual) for the linear to multiply."""
        if self._summed is not None:
            raise RuntimeError("a deferred norm's output goes into one linear only; this one was taken already")
        out = fused(self.hidden, self.residual, self.norm.weight, self.norm.eps)
        if out is NotImplemented:
            if self.residual is None:
                self.normed, self._summed = self.norm(self.hidden), self.hidden
            else:
                self.normed, self._summed = self.norm(self.hidden, self.residual)
            return None
        out, self._summed = out
        return out

    def summed(self) -> torch.Tensor:
        """hidden + residual (hidden where there is none): the residual stream after the norm."""
        if self._summed is None:
            raise RuntimeError("the block did not pass its input to its input linear (input_linear), which "
                               "computes the deferred norm: give it `takes_deferred_norm = False`")
        return self._summed


def folds_into(norm: nn.Module, block: nn.Module) -> bool:
    """Whether ``norm``'s output may reach ``block`` deferred: an RMSNorm in Llama's order (the fused ops'
    contract), a block whose forward passes its input straight into its input linear
    (``takes_deferred_norm``), and kernels with a fused op for that linear."""
    linear = getattr(block, "input_linear", lambda: None)()
    if not getattr(block, "takes_deferred_norm", lambda: False)() or linear is None:
        return False
    return getattr(norm, "folds_into_linear", lambda: False)() and getattr(linear, "folds_norm", lambda: False)()
