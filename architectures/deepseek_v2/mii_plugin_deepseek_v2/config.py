"""DeepSeek-V2's config.json read and checked: the latent attention's sizes, the experts and their routing.
Every field transformers' DeepseekV2 reads is honoured or refused here with a ValueError naming it; so are the
fields of DeepSeek's own modeling code (``moe_layer_freq``, ``scoring_func``) that change the output."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from mii_core.model.spec import MoESpec

MODEL_TYPE = "deepseek_v2"
TOPK_METHODS = ("greedy", "group_limited_greedy")


def refuse(field: str, value: Any, why: str) -> ValueError:
    return ValueError(f"{MODEL_TYPE}: {field} {value!r} is not supported: {why}; fix config.json")


def positive_int(hf: dict[str, Any], field: str) -> int:
    value = hf[field]
    if not isinstance(value, int) or value < 1:
        raise refuse(field, value, "it must be a positive integer")
    return value


@dataclass(frozen=True)
class LatentShape:
    """Multi-head latent attention's sizes: queries through ``q_proj``, or through a ``q_lora_rank`` latent
    (``q_a_proj`` → RMSNorm → ``q_b_proj``); keys and values through one ``kv_lora_rank`` latent shared by
    every head plus one rotary key of ``qk_rope_head_dim`` features shared by every head."""
    num_heads: int
    q_lora_rank: Optional[int]
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    bias: bool  # attention_bias: q_a_proj, kv_a_proj_with_mqa and o_proj carry biases

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def latent_dim(self) -> int:
        """The features one token takes in the KV cache (per layer): the latent and the shared rope key."""
        return self.kv_lora_rank + self.qk_rope_head_dim


def latent_shape(hf: dict[str, Any]) -> LatentShape:
    heads = positive_int(hf, "num_attention_heads")
    kv_heads = hf.get("num_key_value_heads") or heads
    if kv_heads != heads:  # HF expands the latent to every head, then repeats by heads // kv_heads: a mismatch
        raise refuse("num_key_value_heads", kv_heads, f"multi-head latent attention gives every one of the "
                     f"{heads} heads its own key and value; set it to num_attention_heads or null")
    q_lora_rank = hf.get("q_lora_rank")
    if q_lora_rank is not None:
        q_lora_rank = positive_int(hf, "q_lora_rank")
    rope_dim = positive_int(hf, "qk_rope_head_dim")
    if rope_dim % 2:
        raise refuse("qk_rope_head_dim", rope_dim, "rotary features come in pairs, so it must be even")
    return LatentShape(num_heads=heads, q_lora_rank=q_lora_rank, kv_lora_rank=positive_int(hf, "kv_lora_rank"),
                       qk_nope_head_dim=positive_int(hf, "qk_nope_head_dim"), qk_rope_head_dim=rope_dim,
                       v_head_dim=positive_int(hf, "v_head_dim"), bias=bool(hf.get("attention_bias", False)))


@dataclass(frozen=True)
class Routing:
    """How a token picks its experts, as HF's DeepseekV2TopkRouter: softmax over every expert in float32;
    "greedy" takes the top k; "group_limited_greedy" first keeps the ``topk_groups`` of ``groups`` expert
    groups whose best expert scores highest; the k weights (never renormalised) times ``scaling``."""
    method: str
    experts_per_token: int
    groups: int = 1
    topk_groups: int = 1
    scaling: float = 1.0


def routing(hf: dict[str, Any], experts: int) -> Routing:
    method, per_token = hf.get("topk_method") or "greedy", hf["num_experts_per_tok"]
    if method not in TOPK_METHODS:
        raise refuse("topk_method", method, f"supported: {', '.join(TOPK_METHODS)}")
    if not isinstance(per_token, int) or not 0 < per_token <= experts:
        raise refuse("num_experts_per_tok", per_token, f"it must be between 1 and n_routed_experts ({experts})")
    scaling = float(hf.get("routed_scaling_factor", 1.0))
    if method == "greedy":
        return Routing(method, per_token, scaling=scaling)
    groups, topk_groups = hf.get("n_group"), hf.get("topk_group")
    if not isinstance(groups, int) or groups < 1 or experts % groups:
        raise refuse("n_group", groups, f"group_limited_greedy needs a group count dividing the {experts} experts")
    if not isinstance(topk_groups, int) or not 0 < topk_groups <= groups:
        raise refuse("topk_group", topk_groups, f"group_limited_greedy needs between 1 and n_group ({groups})")
    if per_token > topk_groups * (experts // groups):
        raise refuse("num_experts_per_tok", per_token, f"the {topk_groups} kept groups hold only "
                     f"{topk_groups * (experts // groups)} experts")
    return Routing(method, per_token, groups, topk_groups, scaling)


def moe_spec(hf: dict[str, Any]) -> Optional[MoESpec]:
    """The experts, on every layer from ``first_k_dense_replace`` whose index is a multiple of ``moe_layer_freq``
    (DeepSeek's code; transformers reads no such field, its checkpoints all have 1); None without routed experts.
    ``n_shared_experts`` shared experts are one dense MLP of that many times ``moe_intermediate_size``."""
    experts = hf.get("n_routed_experts")
    if not experts:
        return None
    if hf.get("norm_topk_prob"):
        raise refuse("norm_topk_prob", True, "transformers' DeepseekV2 ignores it while DeepSeek's own code "
                     "renormalises the top-k weights instead of scaling them, so which output is meant is unclear; "
                     "set it to false (as DeepSeek-V2's checkpoints do)")
    if (hf.get("scoring_func") or "softmax") != "softmax":
        raise refuse("scoring_func", hf["scoring_func"], "DeepSeek-V2 routes by softmax (sigmoid is DeepSeek-V3's)")
    first_sparse, every = hf.get("first_k_dense_replace", 0), hf.get("moe_layer_freq", 1)
    if not isinstance(every, int) or every < 1:
        raise refuse("moe_layer_freq", every, "it must be a positive integer")
    width = positive_int(hf, "moe_intermediate_size")
    shared = hf.get("n_shared_experts") or 0
    if not shared and hf.get("mlp_bias"):  # HF builds a shared MLP of width 0 anyway: its down_proj bias still adds
        raise refuse("n_shared_experts", shared, "with mlp_bias, transformers adds the bias of its empty shared "
                     "experts' down_proj to every sparse layer; give the model shared experts or set mlp_bias false")
    dense = tuple(i for i in range(hf["num_hidden_layers"]) if i < first_sparse or i % every)
    return MoESpec(num_experts=experts, experts_per_token=routing(hf, experts).experts_per_token, renormalize=False,
                   expert_intermediate_size=width, dense_layers=dense,
                   shared_expert_intermediate_size=width * shared if shared else None)
