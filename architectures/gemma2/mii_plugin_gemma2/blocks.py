"""Gemma 2's attention: the core's post-norm attention (``post_attention_layernorm``) with its logits
soft-capped (``attn_logit_softcapping``) by the attention op."""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

from mii_core.model.post_norm import PostNormAttention


class SoftcappedPostNormAttention(PostNormAttention):
    """:class:`PostNormAttention` with the op's ``logit_softcap`` set (engine parameter ``post_norm.weight``)."""

    def __init__(self, spec, ctx, kernels, device, dtype, layer_index: int = 0, *, softcap: Optional[float]):
        super().__init__(spec, ctx, kernels, device, dtype, layer_index)
        self.params = replace(self.params, logit_softcap=softcap)
