"""Bloom (mii-plugin-bloom) against HF transformers' BloomForCausalLM: ALiBi (a power-of-two head count and
one that is not: the slopes' two recipes), the LayerNorm on the word embeddings, q/k/v fused per head,
tied and untied heads; the hub's config names (bloom-560m's n_embed, num_attention_heads) and its
checkpoints without the ``transformer.`` prefix."""
import pytest
import torch
from transformers import BloomConfig, BloomForCausalLM

from support.checkpoint_edits import REMOVE, edit_config, rename_tensors
from support.family_parity import (SCHEDULES, TinyFamily, assert_config_refused, assert_greedy_matches_hf,
                                   assert_last_logits_close, assert_prefix_cached_matches_hf, missing_field_cases)

SHAPE = dict(n_layer=2)
VARIANTS = {
    "8-heads": dict(hidden_size=64, n_head=8, initializer_range=1.0),  # tied head, as every released Bloom
    "6-heads": dict(hidden_size=96, n_head=6, tie_word_embeddings=False, initializer_range=1.0),
}
SEEDS = {"8-heads": 4, "6-heads": 11}  # clear greedy margins, varied references
# the loud fixtures' logits reach ~35: float32 summation order alone moves them by up to ~4e-4
LOGITS_TOLERANCE = 1e-3


def tiny_family(mktemp) -> TinyFamily:
    return TinyFamily(mktemp, BloomForCausalLM, BloomConfig, SHAPE, VARIANTS, SEEDS)


@pytest.fixture(scope="module")
def bloom(tmp_path_factory):
    return tiny_family(tmp_path_factory.mktemp)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_greedy_matches_hf(bloom, oracle, pipeline, variant, schedule):
    assert_greedy_matches_hf(pipeline, oracle, bloom.path(variant), schedule)


def test_prefix_cached_matches_hf(bloom, oracle, pipeline):
    assert_prefix_cached_matches_hf(pipeline, oracle, bloom.path("6-heads"))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_last_token_logits_close_to_hf(bloom, oracle, pipeline, variant):
    assert_last_logits_close(pipeline, oracle, bloom.path(variant), atol=LOGITS_TOLERANCE)


def test_hub_style_checkpoint_matches_hf(bloom, oracle, pipeline, tmp_path):
    """bigscience/bloom-560m: sizes as n_embed and num_attention_heads, tensors saved from BloomModel
    (no ``transformer.`` prefix); HF reads the original folder."""
    original = bloom.path("6-heads")
    stripped = rename_tensors(original, tmp_path / "no-prefix", lambda name: name.removeprefix("transformer."))
    hub_style = edit_config(stripped, tmp_path / "hub-style", hidden_size=REMOVE, n_head=REMOVE, n_embed=96,
                            num_attention_heads=6)
    assert_greedy_matches_hf(pipeline, oracle, hub_style, reference_path=original)


def test_slopes_are_hfs():
    """The core's slopes against HF's build_alibi_tensor (one sequence: slope_h * j) for several counts."""
    from mii_core.model.alibi import alibi_slopes
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    for heads in (1, 3, 6, 8, 12, 16, 40, 112):
        hf = build_alibi_tensor(torch.ones(1, 2), heads, torch.float32)[:, 0, 1]  # key position 1
        torch.testing.assert_close(alibi_slopes(heads), hf, atol=0, rtol=0)


BAD_CONFIGS = {
    "post-layernorm-residual": (dict(apply_residual_connection_post_layernorm=True),
                                r"(?=.*bloom)(?=.*apply_residual_connection_post_layernorm)"),
    **missing_field_cases("hidden_size", "n_head"),
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_bad_config_is_named(bloom, tmp_path, case):
    assert_config_refused(bloom.path("8-heads"), tmp_path, *BAD_CONFIGS[case])
