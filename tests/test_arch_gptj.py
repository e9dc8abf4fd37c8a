"""GPT-J (mii-plugin-gptj) against HF transformers: attention ∥ MLP under one LayerNorm, rotary on the first
rotary_dim features of each head in GPT-J's interleaved layout (q/k rows permuted on loading), unbiased
q/k/v/out, a biased MLP and a biased LM head, untied (GPT-J-6B) or tied."""
import pytest
from transformers import GPTJConfig, GPTJForCausalLM

from support.checkpoint_edits import REMOVE, edit_config, rename_tensors, with_mask_buffers
from support.family_parity import (SCHEDULES, TinyFamily, assert_config_refused, assert_greedy_matches_hf,
                                   assert_last_logits_close, assert_prefix_cached_matches_hf,
                                   missing_field_cases)

SHAPE = dict(n_embd=64, n_layer=2, n_head=4, n_positions=512)  # heads of 16 features
VARIANTS = {
    # GPT-J-6B's shape in small: rotary on the first quarter of each head (64 of 256 there), untied head
    "partial": dict(rotary_dim=4, initializer_range=0.15),
    # rotary over the whole head, a narrower MLP (n_inner), plain GELU, the head tied to wte (its bias kept)
    "full-tied": dict(rotary_dim=16, n_inner=96, activation_function="gelu", tie_word_embeddings=True,
                      initializer_range=0.4),
}
SEEDS = {"partial": 0, "full-tied": 0}  # clear greedy margins, varied references


def tiny_family(mktemp) -> TinyFamily:
    return TinyFamily(mktemp, GPTJForCausalLM, GPTJConfig, SHAPE, VARIANTS, SEEDS)


@pytest.fixture(scope="module")
def gptj(tmp_path_factory):
    return tiny_family(tmp_path_factory.mktemp)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_partial_rotary_greedy_matches_hf(gptj, oracle, pipeline, schedule):
    assert_greedy_matches_hf(pipeline, oracle, gptj.path("partial"), schedule)


def test_full_rotary_tied_head_matches_hf(gptj, oracle, pipeline):
    assert_greedy_matches_hf(pipeline, oracle, gptj.path("full-tied"))


def test_prefix_cached_matches_hf(gptj, oracle, pipeline):
    assert_prefix_cached_matches_hf(pipeline, oracle, gptj.path("partial"))


@pytest.mark.parametrize("variant", VARIANTS)
def test_last_token_logits_close_to_hf(gptj, oracle, pipeline, variant):
    assert_last_logits_close(pipeline, oracle, gptj.path(variant))


def test_hub_style_checkpoint_matches_hf(gptj, oracle, pipeline, tmp_path):
    """EleutherAI/gpt-j-6b's config.json leaves out tie_word_embeddings and n_inner (null there) and its
    weights carry the attention-mask buffers (attn.bias, attn.masked_bias); tensors saved from GPTJModel lack
    the transformer. prefix."""
    original = gptj.path("partial")
    hub_config = edit_config(original, tmp_path / "hub-config", tie_word_embeddings=REMOVE, n_inner=None)
    hub_style = with_mask_buffers(hub_config, tmp_path / "hub-style", "transformer.h.0.attn.bias",
                                  "transformer.h.0.attn.masked_bias")
    assert_greedy_matches_hf(pipeline, oracle, hub_style, reference_path=original)
    stripped = rename_tensors(original, tmp_path / "no-prefix", lambda name: name.removeprefix("transformer."))
    assert_greedy_matches_hf(pipeline, oracle, stripped, reference_path=original)


BAD_CONFIGS = {
    "activation": (dict(activation_function="tanh"), r"(?=.*gptj)(?=.*activation_function 'tanh')"),
    "rotary-beyond-head": (dict(rotary_dim=32), r"(?=.*gptj)(?=.*rotary_dim 32)"),
    "rotary-odd": (dict(rotary_dim=5), r"(?=.*gptj)(?=.*rotary_dim 5)"),
    "rotary-null": (dict(rotary_dim=None), r"(?=.*gptj)(?=.*rotary_dim None)"),
    **missing_field_cases("n_embd", "n_head"),
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_bad_config_is_named(gptj, tmp_path, case):
    assert_config_refused(gptj.path("partial"), tmp_path, *BAD_CONFIGS[case])
