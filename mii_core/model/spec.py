"""The architecture-neutral description of a decoder-only transformer that the core can build.

A plugin fills a :class:`DecoderSpec` from the HF config; the generic decoder composes its blocks from
it (``mii_core/model/decoder.py``). Every field has the default of a Llama-shaped model, so a plugin
names only what differs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional


@dataclass(frozen=True, slots=True)
class RopeSpec:
    theta: float = 10000.0
    rope_type: str = "default"  # default | linear | dynamic | llama3, or a family's own (its rotary part)
    rotary_dim: Optional[int] = None  # None: the whole head; less for partial rotary (Phi-2, Qwen rotary_pct)
    params: dict[str, Any] = field(default_factory=dict)  # factor, low_freq_factor, ...


@dataclass(frozen=True, slots=True)
class MoESpec:
    num_experts: int
    experts_per_token: int
    renormalize: bool = True  # weights softmaxed over the chosen experts only (Mixtral)
    expert_intermediate_size: Optional[int] = None  # each expert's width; None: the spec's intermediate_size
    # layers whose feed-forward is the dense gated MLP of the spec's intermediate_size (Qwen-MoE's
    # mlp_only_layers / decoder_sparse_step, DeepSeek's first dense layers)
    dense_layers: tuple[int, ...] = ()
    # a dense gated MLP of this width every token also goes through, added to the experts' output
    shared_expert_intermediate_size: Optional[int] = None
    shared_expert_gate: bool = False  # the shared expert's output times sigmoid(x · w) (Qwen2-MoE)

    def is_sparse(self, layer: int) -> bool:
        """Whether layer ``layer``'s feed-forward is this mixture of experts (else the dense MLP)."""
        return layer not in self.dense_layers


@dataclass(frozen=True, slots=True)
class DecoderSpec:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int  # a query's and a key's head size (what the KV cache's key slot holds)
    intermediate_size: int
    max_position_embeddings: int
    # layer wiring: "sequential" pre-norm (Llama), "parallel" attention + MLP on the same input
    # (Falcon, Phi-2; ``parallel_norms`` 1 or 2), "post_norm" norm after each residual add (OPT-350m)
    layout: Literal["sequential", "parallel", "post_norm"] = "sequential"
    parallel_norms: int = 1
    norm: Literal["rms", "layer"] = "rms"
    norm_eps: float = 1e-6
    norm_bias: bool = True  # LayerNorm's bias (MPT's LayerNorms have none); RMSNorm never has one
    final_norm: bool = True
    activation: str = "silu"
    gated_mlp: bool = True
    moe: Optional[MoESpec] = None
    qkv_bias: bool = False
    # q, k and v clamped to [-qkv_clip, qkv_clip] after their projection, before rotary (MPT, OLMo, DBRX)
    qkv_clip: Optional[float] = None
    o_bias: bool = False
    mlp_bias: bool = False
    lm_head_bias: bool = False
    tie_word_embeddings: bool = False
    # positions: rotary when ``rope`` is set; learned table when ``learned_positions`` (OPT adds 2)
    rope: Optional[RopeSpec] = field(default_factory=RopeSpec)
    learned_positions: bool = False
    learned_position_offset: int = 0
    # word embeddings times this (cast to the activations' dtype first, as HF's Gemma), before any projection
    embedding_multiplier: Optional[float] = None
    embed_dim: Optional[int] = None  # word embedding width when it differs from hidden (project in/out)
    sliding_window: Optional[int] = None  # key j visible from query p when p - j < sliding_window
    # per-layer windows when layers differ (None: that layer sees everything); overrides sliding_window
    layer_windows: Optional[tuple[Optional[int], ...]] = None
    attention_scale: Optional[float] = None  # None: head_dim ** -0.5
    # what a KV-cache slot holds besides num_kv_heads keys of head_dim: values of value_head_dim features
    # (None: head_dim), stored beside the keys, or (value_in_key) read as the first value_head_dim features of
    # the key, so the cache stores keys only (one compressed vector per token serving as both)
    value_head_dim: Optional[int] = None
    value_in_key: bool = False
    # the float32 logits soft-capped, tanh(x / cap) * cap (Gemma 2 / 3's final_logit_softcapping); None: as they are
    final_logit_softcap: Optional[float] = None
    bos_token_id: Optional[int] = None
    eos_token_ids: tuple[int, ...] = ()
    checkpoint_dtype: Optional[str] = None

    def __post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")
        if self.layout not in ("sequential", "parallel", "post_norm"):
            raise ValueError(f"layout '{self.layout}' is not one of sequential, parallel, post_norm")
        if self.parallel_norms not in (1, 2):
            raise ValueError(f"parallel_norms must be 1 or 2, got {self.parallel_norms}")
        if self.qkv_clip is not None and not self.qkv_clip > 0:
            raise ValueError(f"qkv_clip must be None or positive, got {self.qkv_clip}")
        if self.sliding_window is not None and self.sliding_window < 1:
            raise ValueError(f"sliding_window must be positive, got {self.sliding_window}")
        if self.value_head_dim is not None and self.value_head_dim < 1:
            raise ValueError(f"value_head_dim must be None or positive, got {self.value_head_dim}")
        if self.value_in_key and self.value_dim > self.head_dim:
            raise ValueError(f"value_in_key reads the value as the key's first {self.value_dim} features, more "
                             f"than the key's head_dim {self.head_dim}")
        if self.layer_windows is not None:
            if len(self.layer_windows) != self.num_layers:
                raise ValueError(f"layer_windows has {len(self.layer_windows)} entries for {self.num_layers} layers")
            if any(w is not None and w < 1 for w in self.layer_windows):
                raise ValueError(f"every window in layer_windows must be positive, got {self.layer_windows}")

    @property
    def value_dim(self) -> int:
        """A value head's size: ``value_head_dim``, or the key's ``head_dim``."""
        return self.value_head_dim if self.value_head_dim is not None else self.head_dim

    @property
    def word_embed_dim(self) -> int:
        return self.embed_dim or self.hidden_size

    def window_of(self, layer: int) -> Optional[int]:
        """Layer ``layer``'s sliding window; None when it attends to the whole context."""
        return self.layer_windows[layer] if self.layer_windows is not None else self.sliding_window

    @property
    def kv_window(self) -> Optional[int]:
        """The window beyond which no layer reads a key again, so the engine may free KV blocks that left
        it; None when some layer attends to the whole context."""
        windows = [self.window_of(layer) for layer in range(self.num_layers)]
        return None if None in windows else max(windows)

    @property
    def scale(self) -> float:
        return self.attention_scale if self.attention_scale is not None else self.head_dim ** -0.5
