"""GPT-2 (mii-plugin-gpt2, the kit's plugin in plugins/example-gpt2, supported as the gpt2 family) against
HF transformers: learned positions, Conv1D weights stored [in, out], c_attn holding q|k|v, a tied head (or
untied), gelu_new or another activation, n_inner, scale_attn_weights, reorder_and_upcast_attn; the hub's
v4 config.json files and prefix-less tensor names."""
import pytest
from transformers import GPT2Config, GPT2LMHeadModel

from support.checkpoint_edits import REMOVE, edit_config, rename_tensors, with_mask_buffers
from support.family_parity import (SCHEDULES, TinyFamily, assert_config_refused, assert_greedy_matches_hf,
                                   assert_last_logits_close, assert_prefix_cached_matches_hf,
                                   missing_field_cases)

SHAPE = dict(n_embd=64, n_layer=2, n_head=4, n_positions=256)
VARIANTS = {
    # gpt2 / distilgpt2 / gpt2-medium...: gelu_new, 4 x n_embd MLP, the head tied to wte
    "gpt2": dict(initializer_range=0.4),
    # an untied head, an n_inner MLP with ReLU, unscaled scores (scale_attn_weights false)
    "untied-unscaled": dict(n_inner=96, activation_function="relu", tie_word_embeddings=False,
                            scale_attn_weights=False, initializer_range=0.4),
    # HF's upcast attention (stanford-crfm's GPT-2s): float32 scores with the scale folded in
    "upcast": dict(reorder_and_upcast_attn=True, activation_function="gelu", initializer_range=0.4),
}
SEEDS = {"gpt2": 0, "untied-unscaled": 0, "upcast": 0}  # clear greedy margins, varied references


def tiny_family(mktemp) -> TinyFamily:
    return TinyFamily(mktemp, GPT2LMHeadModel, GPT2Config, SHAPE, VARIANTS, SEEDS)


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    return tiny_family(tmp_path_factory.mktemp)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_gpt2_greedy_matches_hf(gpt2, oracle, pipeline, schedule):
    assert_greedy_matches_hf(pipeline, oracle, gpt2.path("gpt2"), schedule)


@pytest.mark.parametrize("variant", ["untied-unscaled", "upcast"])
def test_variant_greedy_matches_hf(gpt2, oracle, pipeline, variant):
    assert_greedy_matches_hf(pipeline, oracle, gpt2.path(variant))


def test_prefix_cached_matches_hf(gpt2, oracle, pipeline):
    assert_prefix_cached_matches_hf(pipeline, oracle, gpt2.path("gpt2"))


@pytest.mark.parametrize("variant", VARIANTS)
def test_last_token_logits_close_to_hf(gpt2, oracle, pipeline, variant):
    assert_last_logits_close(pipeline, oracle, gpt2.path(variant))


def test_hub_style_checkpoint_matches_hf(gpt2, oracle, pipeline, tmp_path):
    """The hub's gpt2 and distilgpt2 config.json files (transformers v4) carry n_ctx and torch_dtype, leave
    n_inner, tie_word_embeddings and scale_attn_weights out; their tensors are named "h.0.attn.c_attn.weight"
    (no transformer. prefix) beside the attention-mask buffers."""
    original = gpt2.path("gpt2")
    hub_style = edit_config(original, tmp_path / "hub-style", n_ctx=256, torch_dtype="float32", dtype=REMOVE,
                            n_inner=REMOVE, tie_word_embeddings=REMOVE, scale_attn_weights=REMOVE)
    stripped = rename_tensors(hub_style, tmp_path / "no-prefix", lambda name: name.removeprefix("transformer."))
    with_buffers = with_mask_buffers(stripped, tmp_path / "buffers", "h.0.attn.bias", "h.0.attn.masked_bias")
    assert_greedy_matches_hf(pipeline, oracle, with_buffers, reference_path=original)


BAD_CONFIGS = {
    "activation": (dict(activation_function="tanh"), r"(?=.*gpt2)(?=.*activation_function 'tanh')"),
    "inverse-layer-scale": (dict(scale_attn_by_inverse_layer_idx=True),
                            r"(?=.*gpt2)(?=.*scale_attn_by_inverse_layer_idx)"),
    **missing_field_cases("n_embd", "n_head", "n_positions"),
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_bad_config_is_named(gpt2, tmp_path, case):
    assert_config_refused(gpt2.path("gpt2"), tmp_path, *BAD_CONFIGS[case])
