"""Mistral (mii-plugin-mistral): GQA and a sliding window, token-exact against HF past the window, with
the KV blocks behind the window freed so a long generation holds a bounded number of them."""
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModelForCausalLM, MistralConfig, MistralForCausalLM

from support.checkpoint_edits import REMOVE
from support.compare import assert_responses_match
from support.family_parity import (BLOCK_SIZE, SCHEDULES, TinyFamily, assert_config_refused,
                                   assert_greedy_matches_hf, recording_held_blocks, small_cache_options)
from support.prompts import MIXED_PROMPTS

WINDOW = 16
NEW_TOKENS = 48  # prompts of 2 to 81 tokens: every sequence runs well past the window
LOGITS_TOLERANCE = 1e-4
SHAPE = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
             max_position_embeddings=512, initializer_range=0.15, rms_norm_eps=1e-5)
VARIANTS = {
    "window": dict(sliding_window=WINDOW, num_hidden_layers=2),
    "full": dict(sliding_window=None, num_hidden_layers=2),
    "one_layer": dict(sliding_window=WINDOW, num_hidden_layers=1),
}
SEEDS = {"window": 0, "full": 1, "one_layer": 0}  # every greedy reference clear of near-ties (norms as HF writes them)
# 10 blocks of 4 tokens: one sequence's window (5 blocks) fits twice, the batch (~82 blocks without
# freeing) never, nor the longest sequence alone (33 blocks): it is admitted in chunks
WINDOW_CACHE_BLOCKS = 10


def tiny_family(mktemp) -> TinyFamily:
    return TinyFamily(mktemp, MistralForCausalLM, MistralConfig, SHAPE, VARIANTS, SEEDS, randomize_norms=False)


@pytest.fixture(scope="module")
def mistral(tmp_path_factory):
    return tiny_family(tmp_path_factory.mktemp).path


@pytest.mark.parametrize("variant", ["window", "full"])
def test_mixed_batch_greedy_matches_hf(mistral, oracle, pipeline, variant):
    assert_greedy_matches_hf(pipeline, oracle, mistral(variant), new_tokens=NEW_TOKENS)


@pytest.mark.parametrize("schedule", [s for s in SCHEDULES if s != "whole"])
def test_past_the_window_with_chunking_and_preemption_matches_hf(mistral, oracle, pipeline, schedule):
    assert_greedy_matches_hf(pipeline, oracle, mistral("window"), schedule, new_tokens=NEW_TOKENS,
                             cache_blocks=WINDOW_CACHE_BLOCKS)


def test_hf_window_is_the_last_window_keys_and_the_engine_agrees(mistral, oracle, pipeline):
    """With one layer and rotary (relative) positions, the last token's logits depend only on the last
    WINDOW tokens. Both HF attention implementations on CPU honour that, so HF is a faithful oracle."""
    path = mistral("one_layer")
    ids = torch.randint(3, 400, (70,), generator=torch.Generator().manual_seed(0)).tolist()
    with torch.no_grad():
        for implementation in ("eager", "sdpa"):
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                         attn_implementation=implementation).eval()
            full, tail, shorter = (model(torch.tensor([ids[-n:]])).logits[0, -1] for n in (70, WINDOW, WINDOW - 1))
            torch.testing.assert_close(full, tail, atol=LOGITS_TOLERANCE, rtol=0)
            assert (full - shorter).abs().max() > 0.1, f"{implementation}: the window must hide key WINDOW + 1"
    engine = pipeline(path).engine
    try:
        logits = engine.put([900], [ids])
        torch.testing.assert_close(logits[0], oracle(path).last_logits(ids), atol=LOGITS_TOLERANCE, rtol=0)
    finally:
        engine.flush(900)


def test_long_generation_holds_at_most_window_plus_one_block(mistral, oracle, pipeline):
    path = mistral("window")
    prompt, new_tokens, blocks = MIXED_PROMPTS[4], 64, 8
    reference = oracle(path).greedy(prompt, new_tokens, ignore_eos=True)
    assert reference.prompt_length + new_tokens > 2 * blocks * BLOCK_SIZE, "must outgrow the cache twice"
    pipe = pipeline(path, **small_cache_options(blocks))
    engine = pipe.engine
    with recording_held_blocks(engine) as (in_use, held):
        [response] = pipe([prompt], do_sample=False, max_new_tokens=new_tokens, ignore_eos=True)
    assert_responses_match([response], [reference])
    # decode steps: the window's keys plus the block the next key opens, never more (and that often)
    bound = WINDOW // BLOCK_SIZE + 1
    assert max(in_use[-new_tokens + 1:]) == bound and max(held) <= bound, (in_use, held)
    assert engine.scheduler.kv.allocator.num_free == blocks, "every block is back when the sequence is done"


def test_state_manager_frees_blocks_that_left_the_window(mistral, pipeline):
    """Hand-worked: window 16, blocks of 4. After n cached tokens the next query (position n) sees keys
    n - 15 .. n, so the blocks wholly before key n - 15 go back: floor((n - 15) / 4) of them."""
    engine = pipeline(mistral("window"), **small_cache_options(40)).engine
    expected = {15: 0, 18: 0, 19: 1, 30: 3, 31: 4, 60: 11}
    try:
        seen = 0
        for total, released in expected.items():
            engine.put([901], [[5] * (total - seen)])
            seen = total
            state = engine.scheduler.kv.sequences[901]
            assert (state.released, state.held_blocks) == (released, math.ceil(total / 4) - released), total
            assert engine.scheduler.kv.allocator.num_free == 40 - state.held_blocks
    finally:
        engine.flush(901)
    assert engine.scheduler.kv.allocator.num_free == 40


def test_full_attention_keeps_every_block(mistral, pipeline):
    engine = pipeline(mistral("full"), **small_cache_options(40)).engine
    try:
        engine.put([902], [[5] * 60])
        assert (engine.scheduler.kv.sequences[902].released, engine.scheduler.kv.allocator.num_free) == (0, 40 - 15)
    finally:
        engine.flush(902)


def test_missing_field_is_named(mistral, tmp_path):
    assert_config_refused(mistral("window"), tmp_path, {"num_attention_heads": REMOVE},
                          r"config\.json.*num_attention_heads")


@pytest.mark.parametrize("field, value, feature", [
    ("rope_parameters", {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0}, "yarn"),
    ("hidden_act", "relu2", "relu2"),
])
def test_unsupported_feature_is_named_with_the_model_type(mistral, tmp_path, field, value, feature):
    assert_config_refused(mistral("window"), tmp_path, {field: value}, rf"mistral.*{feature}")


def test_serves_with_only_the_core_its_plugin_and_the_kernels(mistral, oracle):
    """No other architecture plugin is loaded (nor needed): the plugin stands on the core alone."""
    path, prompt = mistral("window"), MIXED_PROMPTS[3]
    script = textwrap.dedent(f"""
        import sys, mii_core
        [response] = mii_core.pipeline({str(path)!r})([{prompt!r}], do_sample=False, max_new_tokens=24,
                                                      ignore_eos=True)
        plugins = {{name.split(".")[0] for name in sys.modules if name.startswith("mii_plugin_")}}
        assert plugins == {{"mii_plugin_mistral"}}, plugins
        print(repr(response.generated_text))
        """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, MII_CORE_PLUGINS="mistral,torch_ref"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == repr(oracle(path).greedy(prompt, 24, ignore_eos=True).text)
