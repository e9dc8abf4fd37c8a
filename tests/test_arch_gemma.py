"""Gemma (mii-plugin-gemma) against HF transformers: embeddings times sqrt(hidden), (1 + w) RMSNorms in
float32, a tanh-GELU gated MLP, head_dim apart from hidden / heads, multi-query and multi-head attention."""
import pytest
import torch
from transformers import GemmaConfig, GemmaForCausalLM

from support.family_parity import (SCHEDULES, TinyFamily, assert_config_refused, assert_greedy_matches_hf,
                                   assert_last_logits_close, missing_field_cases)

SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, head_dim=32,
             max_position_embeddings=512, rms_norm_eps=1e-6)
VARIANTS = {
    # Gemma-2B: one KV head, tied embeddings. Its activation is named outright: the released configs' legacy
    # "gelu" means tanh to transformers 5.24 (its GemmaConfig rewrites it) but erf to 5.17's modeling code (the
    # H200's HF reference parted from ours by 6.6e-3 in the logits); test_legacy_gelu_reads_as_tanh covers it.
    "mqa": dict(num_key_value_heads=1, hidden_act="gelu_pytorch_tanh", initializer_range=0.3),
    # Gemma-7B: multi-head, untied here to load an LM head too
    "mha": dict(num_key_value_heads=4, tie_word_embeddings=False, initializer_range=0.15),
}
SEEDS = {"mqa": 0, "mha": 0}  # clear greedy margins, varied references
# TinyFamily sets every norm weight to 1 + noise: as (1 + w) that is about 2, so a norm read as w (not
# 1 + w) or an embedding left unscaled changes the tokens


def tiny_family(mktemp) -> TinyFamily:
    return TinyFamily(mktemp, GemmaForCausalLM, GemmaConfig, SHAPE, VARIANTS, SEEDS)


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    return tiny_family(tmp_path_factory.mktemp)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_multi_query_greedy_matches_hf(gemma, oracle, pipeline, schedule):
    assert_greedy_matches_hf(pipeline, oracle, gemma.path("mqa"), schedule)


def test_multi_head_untied_matches_hf(gemma, oracle, pipeline):
    assert_greedy_matches_hf(pipeline, oracle, gemma.path("mha"))


@pytest.mark.parametrize("variant", ["mqa", "mha"])
def test_last_token_logits_close_to_hf(gemma, oracle, pipeline, variant):
    assert_last_logits_close(pipeline, oracle, gemma.path(variant))


BAD_CONFIGS = {
    "bidirectional": (dict(use_bidirectional_attention=True), r"(?=.*gemma)(?=.*use_bidirectional_attention)"),
    "activation": (dict(hidden_act="tanh"), r"(?=.*gemma)(?=.*hidden_act 'tanh')"),
    **missing_field_cases("hidden_size", "num_attention_heads"),
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_bad_config_is_named(gemma, tmp_path, case):
    assert_config_refused(gemma.path("mqa"), tmp_path, *BAD_CONFIGS[case])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_offset_norm_is_hfs_order_in_half_precision(dtype):
    """(1 + w) in float32 and the cast last, as GemmaRMSNorm: bit-equal in bf16/fp16, where casting before
    the weight (Llama's order) is not."""
    from transformers.models.gemma.modeling_gemma import GemmaRMSNorm

    from mii_core.model.norm import OffsetRMSNorm
    from mii_core.model.ops import KernelSet
    from mii_core.plugins import get_plugins

    generator = torch.Generator().manual_seed(0)
    x, w = torch.randn(8, 64, generator=generator).to(dtype), torch.randn(64, generator=generator).to(dtype)
    reference = GemmaRMSNorm(64, eps=1e-6).to(dtype)
    ours = OffsetRMSNorm(64, 1e-6, KernelSet("cpu", get_plugins().kernels), torch.device("cpu"), dtype)
    with torch.no_grad():
        reference.weight.copy_(w)
        ours.weight.copy_(w)
        assert torch.equal(ours(x), reference(x))
        llama_order = (1 + w) * (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6)).to(dtype)
        assert not torch.equal(llama_order, reference(x)), "the check cannot tell the orders apart"


def test_legacy_gelu_reads_as_tanh():
    """Google's released Gemma configs say "gelu" and were trained with the tanh approximation (HF's
    GemmaConfig in transformers 5.24 rewrites it so); absent, the default is the tanh one too."""
    from mii_plugin_gemma.policy import gemma_activation

    assert gemma_activation("gelu") == "gelu_pytorch_tanh"
    assert gemma_activation(None) == "gelu_pytorch_tanh"
    assert gemma_activation("gelu_pytorch_tanh") == "gelu_pytorch_tanh"
