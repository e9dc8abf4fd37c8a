"""GPT-Neo (mii-plugin-gpt-neo) against HF transformers: global and local (sliding-window) attention layers
as attention_types lays them out, unscaled attention scores, learned positions, biased LayerNorms, output
projection and MLP, a tied head (GPT-Neo's) or an untied one; past the window, chunked and preempted."""
import pytest
import torch

from transformers import GPTNeoConfig, GPTNeoForCausalLM

from support.checkpoint_edits import REMOVE, edit_config, rename_tensors, with_mask_buffers
from support.family_parity import (SCHEDULES, TinyFamily, assert_config_refused, assert_greedy_matches_hf,
                                   assert_last_logits_close, assert_prefix_cached_matches_hf,
                                   missing_field_cases)

WINDOW = 16
NEW_TOKENS = 48  # prompts of 2 to 81 tokens: every sequence runs well past the window
SHAPE = dict(hidden_size=64, num_layers=2, num_heads=4, max_position_embeddings=512, window_size=WINDOW)
VARIANTS = {
    # GPT-Neo 125M / 1.3B / 2.7B: global and local layers alternating, tied head
    "alternating": dict(attention_types=[[["global", "local"], 1]], initializer_range=0.4),
    # every layer local (the engine then frees KV blocks behind the window), a narrower MLP, untied head
    "all-local": dict(attention_types=[[["local"], 2]], intermediate_size=96, activation_function="gelu",
                      tie_word_embeddings=False, initializer_range=0.4),
}
SEEDS = {"alternating": 1, "all-local": 2}  # clear greedy margins, varied references
# 10 blocks of 4 tokens: one sequence's window (4 blocks) fits twice, the batch never
WINDOW_CACHE_BLOCKS = 10


def tiny_family(mktemp) -> TinyFamily:
    return TinyFamily(mktemp, GPTNeoForCausalLM, GPTNeoConfig, SHAPE, VARIANTS, SEEDS)


@pytest.fixture(scope="module")
def gpt_neo(tmp_path_factory):
    return tiny_family(tmp_path_factory.mktemp)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_alternating_layers_greedy_matches_hf(gpt_neo, oracle, pipeline, schedule):
    assert_greedy_matches_hf(pipeline, oracle, gpt_neo.path("alternating"), schedule, new_tokens=NEW_TOKENS)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_all_local_layers_greedy_matches_hf(gpt_neo, oracle, pipeline, schedule):
    cache_blocks = WINDOW_CACHE_BLOCKS if schedule == "preempted" else None
    assert_greedy_matches_hf(pipeline, oracle, gpt_neo.path("all-local"), schedule, new_tokens=NEW_TOKENS,
                             cache_blocks=cache_blocks)


def test_prefix_cached_matches_hf(gpt_neo, oracle, pipeline):
    assert_prefix_cached_matches_hf(pipeline, oracle, gpt_neo.path("alternating"), new_tokens=NEW_TOKENS)


@pytest.mark.parametrize("variant", VARIANTS)
def test_last_token_logits_close_to_hf(gpt_neo, oracle, pipeline, variant):
    assert_last_logits_close(pipeline, oracle, gpt_neo.path(variant), length=60)


def test_the_window_changes_the_output(gpt_neo, oracle):
    """HF's local layers really hide keys beyond the window in these fixtures (so parity above tests it):
    the same weights with one global layer more give other logits after WINDOW tokens."""
    path = gpt_neo.path("all-local")
    ids = torch.randint(3, 400, (40,), generator=torch.Generator().manual_seed(0)).tolist()
    with torch.no_grad():
        local = oracle(path).last_logits(ids)
        config = GPTNeoConfig.from_pretrained(path)
        config.attention_layers = ["global", "local"]  # what __post_init__ expands attention_types into
        widened = GPTNeoForCausalLM.from_pretrained(path, config=config, dtype=torch.float32).eval()
        assert (widened(torch.tensor([ids])).logits[0, -1] - local).abs().max() > 0.1


def test_hub_style_checkpoint_matches_hf(gpt_neo, oracle, pipeline, tmp_path):
    """EleutherAI/gpt-neo-*'s config.json files also list attention_layers (HF's expansion, recomputed from
    attention_types), leave tie_word_embeddings out and intermediate_size null, and older weights carry
    the attention-mask buffers; tensors saved from GPTNeoModel lack the transformer. prefix."""
    original = gpt_neo.path("alternating")
    hub_config = edit_config(original, tmp_path / "hub-config", tie_word_embeddings=REMOVE, intermediate_size=None,
                             attention_layers=["global", "local"])
    hub_style = with_mask_buffers(hub_config, tmp_path / "hub-style", "transformer.h.1.attn.attention.bias",
                                  "transformer.h.1.attn.attention.masked_bias")
    assert_greedy_matches_hf(pipeline, oracle, hub_style, reference_path=original, new_tokens=NEW_TOKENS)
    stripped = rename_tensors(original, tmp_path / "no-prefix", lambda name: name.removeprefix("transformer."))
    assert_greedy_matches_hf(pipeline, oracle, stripped, reference_path=original, new_tokens=NEW_TOKENS)


BAD_CONFIGS = {
    "activation": (dict(activation_function="tanh"), r"(?=.*gpt_neo)(?=.*activation_function 'tanh')"),
    "layer-count": (dict(attention_types=[[["global", "local"], 2]]), r"(?=.*gpt_neo)(?=.*attention_types)"),
    "layer-kind": (dict(attention_types=[[["global", "sparse"], 1]]), r"(?=.*gpt_neo)(?=.*'sparse')"),
    "malformed": (dict(attention_types=["global", "local"]), r"(?=.*gpt_neo)(?=.*attention_types)"),
    "window": (dict(window_size=0), r"(?=.*gpt_neo)(?=.*window_size 0)"),
    **missing_field_cases("hidden_size", "num_heads", "num_layers"),
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_bad_config_is_named(gpt_neo, tmp_path, case):
    assert_config_refused(gpt_neo.path("alternating"), tmp_path, *BAD_CONFIGS[case])
