"""Qwen (v1) as a declaration: how its config.json reads, and where each checkpoint tensor goes.

Qwen v1 ships as remote code (``QWenLMHeadModel``, modeling_qwen.py). Its layout: a pre-RMSNorm decoder,
``attn.c_attn`` one fused [q | k | v] projection with bias, ``attn.c_proj`` and the MLP without bias
(``no_bias``), the MLP ``c_proj(w1(x) * silu(w2(x)))`` (so w2 is the gate) half as wide as
``intermediate_size`` says, multi-head attention only. ``use_dynamic_ntk`` and ``use_logn_attn`` act
past ``seq_length``: this family's own rotary part (:mod:`mii_plugin_qwen.rotary`) and attention
(:mod:`mii_plugin_qwen.attention`), which ``build_model`` puts into the core's decoder.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Optional, Union

import torch

from mii_core.distributed.parallel_context import ParallelContext
from mii_core.model.decoder import DecoderModel
from mii_core.model.hf_common import eos_ids_from_hf
from mii_core.model.parts import DecoderParts
from mii_core.model.policy import ArchitecturePolicy
from mii_core.model.spec import DecoderSpec, RopeSpec
from mii_core.model.weight_rules import module_rules
from mii_plugin_qwen.attention import LognAttention
from mii_plugin_qwen.rotary import ROPE_TYPE, QwenRotaryEmbedding

_LAYER = "transformer.h.{i}."
_FLAG_DTYPES = (("bf16", "bfloat16"), ("fp16", "float16"), ("fp32", "float32"))


class QwenPolicy(ArchitecturePolicy):
    weight_rules = {
        # the embeddings, the head and the RMSNorms: a weight, no bias
        **module_rules({"transformer.wte": "embed", "transformer.ln_f": "final_norm", "lm_head": "lm_head",
                        _LAYER + "ln_1": "layers.{i}.attn_norm", _LAYER + "ln_2": "layers.{i}.mlp_norm"},
                       parts="weight"),
        # the projections with their biases (the spec says which exist: c_attn always, the rest unless no_bias)
        **module_rules(prefix=_LAYER, modules={
            "attn.c_attn": "layers.{i}.attn.qkv",  # [q | k | v]: split on loading
            "attn.c_proj": "layers.{i}.attn.o_proj",
            # w2 is the gate, w1 the up projection: QWenMLP computes c_proj(w1(x) * silu(w2(x)))
            "mlp.w2": ("layers.{i}.mlp.up", "gate"), "mlp.w1": ("layers.{i}.mlp.up", "up"),
            "mlp.c_proj": "layers.{i}.mlp.down",
        }),
    }

    def build_spec(self, hf: dict[str, Any]) -> DecoderSpec:
        if hf.get("quantization_config"):
            raise _unsupported("quantization_config (GPTQ/AWQ weights): use the unquantized checkpoint")
        heads, hidden = hf["num_attention_heads"], hf["hidden_size"]
        head_dim = hf.get("kv_channels") or hidden // heads
        if head_dim * heads != hidden:  # modeling_qwen.py splits c_attn's output in hidden_size pieces
            raise _unsupported(f"kv_channels {head_dim} x num_attention_heads {heads} != hidden_size {hidden}")
        seq_length = hf["seq_length"]
        no_bias = hf.get("no_bias", True)
        return DecoderSpec(
            vocab_size=hf["vocab_size"], hidden_size=hidden, num_layers=hf["num_hidden_layers"],
            num_heads=heads, num_kv_heads=heads, head_dim=head_dim,
            intermediate_size=hf["intermediate_size"] // 2,  # w1 and w2 are each half of it
            max_position_embeddings=hf.get("max_position_embeddings") or seq_length,
            norm="rms", norm_eps=hf.get("layer_norm_epsilon", 1e-6), activation="silu", gated_mlp=True,
            qkv_bias=True, o_bias=not no_bias, mlp_bias=not no_bias,
            tie_word_embeddings=hf.get("tie_word_embeddings", False), rope=_rope(hf, head_dim, seq_length),
            attention_scale=None if hf.get("scale_attn_weights", True) else 1.0,
            bos_token_id=hf.get("bos_token_id"), eos_token_ids=eos_ids_from_hf(hf),
            checkpoint_dtype=hf.get("torch_dtype") or next((d for flag, d in _FLAG_DTYPES if hf.get(flag)), None),
        )

    def build_model(self, ctx: ParallelContext, kernels, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        """The core's decoder with Qwen's own rotary part (dynamic NTK) and attention (log-n), where on."""
        parts = DecoderParts()
        if self.spec.rope.rope_type == ROPE_TYPE:
            parts = DecoderParts(rotary=lambda spec, dev: QwenRotaryEmbedding(
                spec.rope, spec.head_dim, spec.max_position_embeddings, dev))
        if self.hf_config.get("use_logn_attn", True):
            parts = DecoderParts(rotary=parts.rotary,
                                 attention=partial(LognAttention, logn_base=self.hf_config["seq_length"]))
        return DecoderModel(self.spec, ctx, kernels, device, dtype, parts)

    def load_tokenizer(self, path: Union[str, Path]) -> Optional[Any]:
        """Qwen's tiktoken vocabulary when the folder has one (its tokenization_qwen.py is never run)."""
        from mii_plugin_qwen.tokenizer import VOCAB_FILE, QwenTokenizer

        vocab = Path(path) / VOCAB_FILE
        return QwenTokenizer(vocab) if vocab.is_file() else None


def _rope(hf: dict[str, Any], head_dim: int, seq_length: int) -> RopeSpec:
    pct = hf.get("rotary_pct", 1.0)
    rotary_dim = int(head_dim * pct)  # modeling_qwen.py's rotary_ndims
    if not 0 < pct <= 1 or rotary_dim % 2:
        raise _unsupported(f"rotary_pct {pct} (it must give an even rotary dimension in (0, {head_dim}])")
    dynamic = hf.get("use_dynamic_ntk", True)
    return RopeSpec(theta=float(hf.get("rotary_emb_base", 10000)),
                    rope_type=ROPE_TYPE if dynamic else "default",
                    rotary_dim=None if rotary_dim == head_dim else rotary_dim,
                    params={"original_max_position_embeddings": seq_length} if dynamic else {})


def _unsupported(feature: str) -> ValueError:
    return ValueError(f"model_type 'qwen': {feature} is not supported")
