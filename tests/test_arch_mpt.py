"""MPT (mii-plugin-mpt) against HF transformers' MptForCausalLM: ALiBi with MPT's slope recipe (a power-of-two
head count and one that is not), no biases (LayerNorms included), ``attn_config.clip_qkv`` clamping q/k/v,
``attn_config.softmax_scale``, tied and untied heads; the hub's config.json shape (mosaicml/mpt-7b's
attn_config, llm-foundry's ffn_config); and every setting HF's MptForCausalLM would not compute refused."""
import pytest
import torch
from transformers import MptConfig, MptForCausalLM

from support.checkpoint_edits import REMOVE, edit_config
from support.family_parity import (SCHEDULES, TinyFamily, assert_config_refused, assert_greedy_matches_hf,
                                   assert_last_logits_close, assert_prefix_cached_matches_hf, missing_field_cases)
from support.prompts import MIXED_PROMPTS

CLIP = 1.5
SHAPE = dict(n_layers=2, max_seq_len=256)
VARIANTS = {
    # mpt-7b's layout: multi-head ALiBi, tied head, HF's default scale
    "7b": dict(d_model=64, n_heads=4, initializer_range=0.3),
    # clip_qkv (as mpt-7b-8k and later foundry exports), a softmax scale, 6 heads, an untied head
    "clip": dict(d_model=96, n_heads=6, tie_word_embeddings=False, initializer_range=0.3,
                 attn_config=dict(clip_qkv=CLIP, softmax_scale=0.2)),
}
SEEDS = {"7b": 1, "clip": 1}  # clear greedy margins, varied references
# mosaicml/mpt-7b's attn_config as its config.json holds it, and llm-foundry's later ffn_config
HUB_ATTN_CONFIG = {"alibi": True, "alibi_bias_max": 8, "attn_impl": "torch", "attn_pdrop": 0,
                   "attn_type": "multihead_attention", "attn_uses_sequence_id": False, "clip_qkv": None,
                   "prefix_lm": False, "qk_ln": False, "softmax_scale": None}
HUB_FFN_CONFIG = {"ffn_type": "mptmlp", "ffn_act_fn": {"name": "gelu", "approximate": "none"}}


def tiny_family(mktemp) -> TinyFamily:
    return TinyFamily(mktemp, MptForCausalLM, MptConfig, SHAPE, VARIANTS, SEEDS)


@pytest.fixture(scope="module")
def mpt(tmp_path_factory):
    return tiny_family(tmp_path_factory.mktemp)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_greedy_matches_hf(mpt, oracle, pipeline, variant, schedule):
    assert_greedy_matches_hf(pipeline, oracle, mpt.path(variant), schedule)


def test_prefix_cached_matches_hf(mpt, oracle, pipeline):
    assert_prefix_cached_matches_hf(pipeline, oracle, mpt.path("clip"))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_last_token_logits_close_to_hf(mpt, oracle, pipeline, variant):
    assert_last_logits_close(pipeline, oracle, mpt.path(variant), atol=1e-3)


def test_the_clip_fixture_really_clips(mpt, oracle):
    """Parity of the clip variant proves clip_qkv only if HF's q/k/v leave [-CLIP, CLIP] on these prompts."""
    model, largest = oracle(mpt.path("clip")).model, []
    hook = model.transformer.blocks[0].attn.Wqkv.register_forward_hook(
        lambda module, args, out: largest.append(out.abs().max().item()))
    try:
        with torch.no_grad():
            model(torch.tensor([oracle(mpt.path("clip")).encode(MIXED_PROMPTS[5])]))
    finally:
        hook.remove()
    assert largest[0] > 2 * CLIP


def test_hub_style_config_matches_hf(mpt, oracle, pipeline, tmp_path):
    hub_style = edit_config(mpt.path("7b"), tmp_path / "hub-style", attn_config=HUB_ATTN_CONFIG,
                            ffn_config=HUB_FFN_CONFIG, learned_pos_emb=True, init_config={"init_std": 0.02})
    assert_greedy_matches_hf(pipeline, oracle, hub_style, reference_path=mpt.path("7b"))


def test_slopes_are_hfs():
    """MPT's slopes against HF's build_mpt_alibi_tensor (the last key at 0, the one before at -slope)."""
    from mii_plugin_mpt.blocks import mpt_alibi_slopes
    from transformers.models.mpt.modeling_mpt import build_mpt_alibi_tensor

    for heads in (1, 3, 6, 8, 12, 16, 40):
        for bias_max in (8, 16):
            hf = -build_mpt_alibi_tensor(heads, 2, alibi_bias_max=bias_max)[:, 0, 0]
            torch.testing.assert_close(mpt_alibi_slopes(heads, bias_max), hf, atol=0, rtol=0)


def _refused(changes: dict, *named: str) -> tuple[dict, str]:
    return changes, "".join(f"(?=.*{name})" for name in ("mpt", *named))


BAD_CONFIGS = {
    "multi-query": _refused(dict(attn_config={"attn_type": "multiquery_attention"}), r"attn_config\.attn_type"),
    "no-alibi": _refused(dict(attn_config={"alibi": False}), r"attn_config\.alibi "),
    "alibi-bias-max": _refused(dict(attn_config={"alibi_bias_max": 16}), r"attn_config\.alibi_bias_max"),
    "qk-ln": _refused(dict(attn_config={"qk_ln": True}), r"attn_config\.qk_ln"),
    "prefix-lm": _refused(dict(attn_config={"prefix_lm": True}), r"attn_config\.prefix_lm"),
    "rope": _refused(dict(attn_config={"rope": True}), r"attn_config\.rope"),
    "window": _refused(dict(attn_config={"sliding_window_size": 64}), r"attn_config\.sliding_window_size"),
    "biases": _refused(dict(no_bias=False), "no_bias"),
    "logit-scale": _refused(dict(logit_scale=0.5), "logit_scale"),
    "norm-type": _refused(dict(norm_type="rmsnorm"), "norm_type 'rmsnorm'"),
    "expansion-ratio": _refused(dict(expansion_ratio=2), "expansion_ratio 2"),
    "ffn-type": _refused(dict(ffn_config={"ffn_type": "mb_moe"}), r"ffn_config\.ffn_type"),
    "ffn-activation": _refused(dict(ffn_config={"ffn_act_fn": {"name": "silu"}}), r"ffn_config\.ffn_act_fn"),
    **missing_field_cases("d_model", "n_heads", "n_layers"),
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_bad_config_is_named(mpt, tmp_path, case):
    assert_config_refused(mpt.path("7b"), tmp_path, *BAD_CONFIGS[case])
