"""The architecture-neutral description of a decoder-only transformer that the core can build."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional


@dataclass(frozen=True, slots=True)
class RopeSpec:
    theta: float = 10000.0
    rope_type: str = "default"  # default | linear | dynamic | llama3
    rotary_dim: Optional[int] = None  # None: the whole head
    params: dict[str, Any] = field(default_factory=dict)  # factor, low_freq_factor, ...


@dataclass(frozen=True, slots=True)
class DecoderSpec:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    max_position_embeddings: int
    norm: Literal["rms", "layer"] = "rms"
    norm_eps: float = 1e-6
    activation: str = "silu"
    gated_mlp: bool = True
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    rope: Optional[RopeSpec] = field(default_factory=RopeSpec)
    bos_token_id: Optional[int] = None
    eos_token_ids: tuple[int, ...] = ()
    checkpoint_dtype: Optional[str] = None

    def __post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")
