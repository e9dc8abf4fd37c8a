"""GPT-NeoX (mii-plugin-gpt-neox) against HF transformers: parallel residual on two LayerNorms (and the
sequential form), partial rotary, q/k/v fused per head, biased LayerNorms and projections, untied embed_out."""
import pytest
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from support.checkpoint_edits import REMOVE, edit_config
from support.family_parity import (SCHEDULES, TinyFamily, assert_config_refused, assert_greedy_matches_hf,
                                   assert_last_logits_close, missing_field_cases)

SHAPE = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
             max_position_embeddings=512)
VARIANTS = {
    # Pythia / GPT-NeoX-20B: attention ∥ MLP, rotary on a quarter of each 16-wide head
    "parallel": dict(use_parallel_residual=True, rotary_pct=0.25, initializer_range=0.15),
    # use_parallel_residual false: sequential pre-norm blocks; rotary on half of each head
    "sequential": dict(use_parallel_residual=False, rotary_pct=0.5, rotary_emb_base=1000, initializer_range=0.15),
}
SEEDS = {"parallel": 1, "sequential": 3}  # clear greedy margins, varied references


def tiny_family(mktemp) -> TinyFamily:
    return TinyFamily(mktemp, GPTNeoXForCausalLM, GPTNeoXConfig, SHAPE, VARIANTS, SEEDS)


@pytest.fixture(scope="module")
def gpt_neox(tmp_path_factory):
    return tiny_family(tmp_path_factory.mktemp)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_parallel_residual_greedy_matches_hf(gpt_neox, oracle, pipeline, schedule):
    assert_greedy_matches_hf(pipeline, oracle, gpt_neox.path("parallel"), schedule)


def test_sequential_residual_matches_hf(gpt_neox, oracle, pipeline):
    assert_greedy_matches_hf(pipeline, oracle, gpt_neox.path("sequential"))


def test_hub_style_config_matches_hf(gpt_neox, oracle, pipeline, tmp_path):
    """EleutherAI's config.json files keep rotary_pct and rotary_emb_base at the top level (transformers v5
    writes them inside rope_parameters)."""
    hub_style = edit_config(gpt_neox.path("sequential"), tmp_path / "hub-style", rope_parameters=REMOVE,
                            rotary_pct=0.5, rotary_emb_base=1000)
    assert_greedy_matches_hf(pipeline, oracle, hub_style)


@pytest.mark.parametrize("variant", ["parallel", "sequential"])
def test_last_token_logits_close_to_hf(gpt_neox, oracle, pipeline, variant):
    assert_last_logits_close(pipeline, oracle, gpt_neox.path(variant))


BAD_CONFIGS = {
    "activation": (dict(hidden_act="tanh"), r"(?=.*gpt_neox)(?=.*hidden_act 'tanh')"),
    **missing_field_cases("hidden_size", "intermediate_size"),
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_bad_config_is_named(gpt_neox, tmp_path, case):
    assert_config_refused(gpt_neox.path("parallel"), tmp_path, *BAD_CONFIGS[case])
