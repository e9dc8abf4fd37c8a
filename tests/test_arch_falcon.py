"""Falcon (mii-plugin-falcon) against HF transformers: the 7B, 40B/180B, Falcon2 and RW layouts."""
import pytest
from transformers import FalconConfig, FalconForCausalLM

from support.checkpoint_edits import rename_tensors, tensor_names
from support.family_parity import (SCHEDULES, TinyFamily, assert_config_refused, assert_greedy_matches_hf,
                                   missing_field_cases)

FAMILY_MODEL, FAMILY_CONFIG = FalconForCausalLM, FalconConfig
SHAPE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=256)
VARIANTS = {
    # falcon-7b: one KV head for all query heads, attention ∥ MLP on one LayerNorm, tied embeddings
    "7b": dict(new_decoder_architecture=False, multi_query=True, parallel_attn=True, initializer_range=0.3),
    # falcon-40b/180b: 2 KV groups of 2 query heads (q/k/v interleaved per group), ln_attn + ln_mlp
    "40b": dict(new_decoder_architecture=True, num_kv_heads=2, tie_word_embeddings=False, initializer_range=0.15),
    # Falcon2-11B: the new architecture with one LayerNorm feeding both branches
    "falcon2": dict(new_decoder_architecture=True, num_kv_heads=2, num_ln_in_parallel_attn=1,
                    tie_word_embeddings=False, initializer_range=0.15),
    # falcon-rw's layout (with rotary, not alibi): sequential pre-norm blocks, q/k/v per head, biases
    "rw": dict(new_decoder_architecture=False, multi_query=False, parallel_attn=False, bias=True,
               initializer_range=0.5),
}
SEEDS = {"7b": 0, "40b": 0, "falcon2": 2, "rw": 2}  # clear greedy margins, varied references


def tiny_family(mktemp) -> TinyFamily:
    return TinyFamily(mktemp, FAMILY_MODEL, FAMILY_CONFIG, SHAPE, VARIANTS, SEEDS)


@pytest.fixture(scope="module")
def falcon(tmp_path_factory):
    return tiny_family(tmp_path_factory.mktemp)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("variant", ["7b", "40b", "rw"])
def test_greedy_matches_hf(falcon, oracle, pipeline, variant, schedule):
    assert_greedy_matches_hf(pipeline, oracle, falcon.path(variant), schedule)


def test_falcon2_one_norm_new_architecture_matches_hf(falcon, oracle, pipeline):
    assert_greedy_matches_hf(pipeline, oracle, falcon.path("falcon2"))


def test_checkpoint_without_transformer_prefix_matches_hf(falcon, oracle, pipeline, tmp_path):
    """Checkpoints saved from FalconModel name tensors "h.0...." instead of "transformer.h.0....";
    HF (the reference) reads the original folder."""
    original = falcon.path("40b")
    stripped = rename_tensors(original, tmp_path / "no-prefix", lambda name: name.removeprefix("transformer."))
    assert not any(name.startswith("transformer.") for name in tensor_names(stripped))
    assert_greedy_matches_hf(pipeline, oracle, stripped, reference_path=original)


# config.json edits that must be refused, and what the error must name (both lookaheads must match)
BAD_CONFIGS = {
    "alibi": (dict(alibi=True), r"(?=.*alibi)(?=.*falcon)"),
    "new-arch-sequential": (dict(new_decoder_architecture=True, parallel_attn=False),
                            r"(?=.*parallel_attn)(?=.*falcon)"),
    "old-arch-two-norms": (dict(new_decoder_architecture=False, num_ln_in_parallel_attn=2),
                           r"(?=.*num_ln_in_parallel_attn)(?=.*falcon)"),
    **missing_field_cases("num_attention_heads", "hidden_size"),
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_bad_config_is_a_clear_error(falcon, tmp_path, case):
    assert_config_refused(falcon.path("7b"), tmp_path, *BAD_CONFIGS[case])
