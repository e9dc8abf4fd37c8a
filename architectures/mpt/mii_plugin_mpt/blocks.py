"""MPT's attention: the core's ALiBi attention with MPT's slope recipe (``build_mpt_alibi_tensor``), which
equals Bloom's in exact arithmetic but rounds differently in float32 from 11 heads on."""
from __future__ import annotations

import math

import torch

from mii_core.model.alibi import AlibiAttention

ALIBI_BIAS_MAX = 8  # HF's MptModel builds its ALiBi table with this, whatever attn_config says


def mpt_alibi_slopes(num_heads: int, alibi_bias_max: float = ALIBI_BIAS_MAX) -> torch.Tensor:
    """HF's ``build_mpt_alibi_tensor`` slopes, float32 [num_heads]: 2^(-alibi_bias_max · i / n) for the
    power of two n at or above the head count, the odd-numbered ones first when the count is not one."""
    padded = 2 ** math.ceil(math.log2(num_heads))
    exponents = torch.arange(1, padded + 1, dtype=torch.int64).float() * (alibi_bias_max / padded)
    slopes = 1.0 / torch.pow(2, exponents)
    if padded != num_heads:
        slopes = torch.cat([slopes[1::2], slopes[::2]])[:num_heads]
    return slopes


class MptAttention(AlibiAttention):
    def head_slopes(self, num_heads: int) -> torch.Tensor:
        return mpt_alibi_slopes(num_heads)
