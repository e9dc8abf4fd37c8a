"""DeepSeek-V2 / DeepSeek-V2-Lite (HF model_type "deepseek_v2") as a plugin: multi-head latent attention
(:mod:`.attention`), plain or YaRN rope on the rotary part of each head (:mod:`.rope`), and a mixture of
routed experts (greedy or group-limited top-k, times ``routed_scaling_factor``) beside shared experts, dense
MLPs on the first ``first_k_dense_replace`` layers (:mod:`.moe`). Llama's pre-norm RMSNorm layout otherwise."""
from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import torch

from mii_core.distributed.parallel_context import ParallelContext
from mii_core.model.decoder import DecoderModel
from mii_core.model.hf_common import LAYER, decoder_rules, decoder_spec, expert_rules, gated_mlp_rules
from mii_core.model.mlp import build_mlp
from mii_core.model.parts import DecoderParts
from mii_core.model.policy import ArchitecturePolicy
from mii_core.model.spec import DecoderSpec

from mii_plugin_deepseek_v2.attention import LatentAttention
from mii_plugin_deepseek_v2.config import latent_shape, moe_spec, routing
from mii_plugin_deepseek_v2.moe import DeepseekMoE
from mii_plugin_deepseek_v2.rope import LatentRotary, rope_spec, softmax_scale

ATTN, TARGET = LAYER + "self_attn.", "layers.{i}.attn."


def _attention_rules() -> dict[str, Any]:
    rules = {
        ATTN + "q_proj.weight": TARGET + "q_proj.weight",
        ATTN + "q_a_layernorm.weight": TARGET + "q_a_norm.weight",
        ATTN + "q_b_proj.weight": TARGET + "q_b_proj.weight",
        ATTN + "kv_a_layernorm.weight": TARGET + "kv_a_norm.weight",
        ATTN + "kv_b_proj.weight": TARGET + "kv_b_proj.weight",
    }
    for part in ("weight", "bias"):  # the biases exist with attention_bias
        rules[ATTN + f"q_a_proj.{part}"] = TARGET + f"q_a_proj.{part}"
        rules[ATTN + f"kv_a_proj_with_mqa.{part}"] = TARGET + f"kv_a_proj.{part}"
        rules[ATTN + f"o_proj.{part}"] = TARGET + f"o_proj.{part}"
    return rules


class DeepseekV2Policy(ArchitecturePolicy):
    @property
    def weight_rules(self) -> dict[str, Any]:
        """Without shared experts (n_shared_experts 0) transformers still writes their empty tensors: no rule
        maps them, so they are skipped."""
        moe = self.spec.moe
        shared = gated_mlp_rules(LAYER + "mlp.shared_experts.", "layers.{i}.mlp.shared_expert") \
            if moe is not None and moe.shared_expert_intermediate_size else {}
        # the common layout's embeddings, norms, dense MLP (the first layers) and head; attention of its own
        common = {name: rule for name, rule in decoder_rules().items() if "self_attn." not in name}
        return common | _attention_rules() | expert_rules() | shared

    def build_spec(self, hf: dict[str, Any]) -> DecoderSpec:
        """The attention op's view of MLA (:mod:`.attention`): multi-query attention over one KV head whose key is
        [latent | rope key] and whose value is the key's first kv_lora_rank features, so the KV cache holds the
        latent once (config.json's ``head_dim``, which transformers sets to qk_rope_head_dim, is not read)."""
        shape = latent_shape(hf)
        spec = decoder_spec(hf, rope=None, num_kv_heads=1, head_dim=shape.latent_dim,
                            value_head_dim=shape.kv_lora_rank, value_in_key=True, moe=moe_spec(hf))
        rope = rope_spec(hf, shape.qk_rope_head_dim)
        return dataclasses.replace(spec, rope=rope, attention_scale=softmax_scale(shape.qk_head_dim, rope))

    def build_model(self, ctx: ParallelContext, kernels, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        mlp = build_mlp
        if self.spec.moe is not None:
            moe_block = partial(DeepseekMoE, routing=routing(self.hf_config, self.spec.moe.num_experts))
            mlp = partial(build_mlp, moe_block=moe_block)
        parts = DecoderParts(rotary=LatentRotary,
                             attention=partial(LatentAttention, shape=latent_shape(self.hf_config)), mlp=mlp)
        return DecoderModel(self.spec, ctx, kernels, device, dtype, parts)
