"""OPT (mii-plugin-opt) against HF transformers: OPT-125m's pre-norm blocks and OPT-350m's post-norm
blocks with projected word embeddings; learned positions shifted by 2 in both."""
import pytest
from transformers import OPTConfig, OPTForCausalLM

from support.checkpoint_edits import rename_tensors, tensor_names
from support.family_parity import (SCHEDULES, TinyFamily, assert_config_refused, assert_greedy_matches_hf,
                                   missing_field_cases)

FAMILY_MODEL, FAMILY_CONFIG = OPTForCausalLM, OPTConfig
SHAPE = dict(hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=256)
VARIANTS = {
    # opt-125m and most sizes: LayerNorm before each block and at the end, tied embeddings
    "125m": dict(do_layer_norm_before=True, init_std=0.5),
    # opt-350m: LayerNorm after each residual add, no final LayerNorm, 32-wide word embeddings projected
    # in and out of the 64-wide decoder
    "350m": dict(do_layer_norm_before=False, word_embed_proj_dim=32, init_std=0.3),
}
SEEDS = {"125m": 0, "350m": 0}  # clear greedy margins, varied references
# post-norm blocks end on a LayerNorm: noisier norm weights and biases than this swamp the tied LM head's input
VECTOR_SPREAD = {"350m": 0.25}


def tiny_family(mktemp) -> TinyFamily:
    return TinyFamily(mktemp, FAMILY_MODEL, FAMILY_CONFIG, SHAPE, VARIANTS, SEEDS, VECTOR_SPREAD)


@pytest.fixture(scope="module")
def opt(tmp_path_factory):
    return tiny_family(tmp_path_factory.mktemp)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_greedy_matches_hf(opt, oracle, pipeline, variant, schedule):
    assert_greedy_matches_hf(pipeline, oracle, opt.path(variant), schedule)


def test_checkpoint_saved_from_opt_model_matches_hf(opt, oracle, pipeline, tmp_path):
    """facebook/opt-* weights were saved from OPTModel: "decoder.layers.0...." with no "model." prefix."""
    original = opt.path("350m")
    stripped = rename_tensors(original, tmp_path / "no-prefix", lambda name: name.removeprefix("model."))
    assert any(name.startswith("decoder.layers.") for name in tensor_names(stripped))
    assert_greedy_matches_hf(pipeline, oracle, stripped, reference_path=original)


# config.json edits that must be refused, and what the error must name (both lookaheads must match)
BAD_CONFIGS = {
    "norms-without-affine": (dict(layer_norm_elementwise_affine=False),
                             r"(?=.*layer_norm_elementwise_affine)(?=.*\bopt\b)"),
    **missing_field_cases("ffn_dim", "num_hidden_layers"),
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_bad_config_is_a_clear_error(opt, tmp_path, case):
    assert_config_refused(opt.path("125m"), tmp_path, *BAD_CONFIGS[case])
