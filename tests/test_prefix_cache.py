"""Automatic prefix caching: full KV blocks are reused by later requests with the same prefix, the
output equals HF's (and the uncached engine's), and a hash collision can never return wrong text."""

import pytest

from mii_core.kv_cache.prefix_cache import PrefixCache
from support.compare import assert_texts_match

SHARED = ("In the middle of the forest there is an old house with a red door and a green roof."
          " The children walked to school together,")
PROMPTS = [SHARED + " talking", SHARED + " and the sky", SHARED + " the old man", "river", SHARED]
NEW_TOKENS = 12
SMALL_BLOCKS = {"state_manager": {"kv_block_size": 4}}


def _run_one_by_one(pipe, prompts):
    return [pipe(p, do_sample=False, max_new_tokens=NEW_TOKENS, ignore_eos=True)[0] for p in prompts]


def test_shared_prefix_blocks_are_reused_and_output_equals_hf(checkpoint, oracle, pipeline):
    path = checkpoint("gqa")
    references = [oracle(path).greedy(p, NEW_TOKENS, ignore_eos=True) for p in PROMPTS]
    pipe = pipeline(path, inference_engine_config=SMALL_BLOCKS)
    cache = pipe.engine.scheduler.kv.prefix_cache
    assert cache is not None, "prefix caching is on by default"
    before = cache.hit_blocks
    assert_texts_match(_run_one_by_one(pipe, PROMPTS), references)
    shared_blocks = (len(oracle(path).encode(SHARED)) - 1) // 4
    # every prompt after the first that starts with SHARED reuses (nearly) all of its blocks
    assert cache.hit_blocks - before >= 3 * (shared_blocks - 1)


def test_output_is_the_same_with_prefix_caching_off(checkpoint, pipeline):
    path = checkpoint("gqa")
    off = {"state_manager": {"kv_block_size": 4, "enable_prefix_caching": False}}
    uncached = pipeline(path, inference_engine_config=off)
    assert uncached.engine.scheduler.kv.prefix_cache is None
    cached = pipeline(path, inference_engine_config=SMALL_BLOCKS)
    batch_cached = cached(PROMPTS * 2, do_sample=False, max_new_tokens=NEW_TOKENS, ignore_eos=True)
    batch_uncached = uncached(PROMPTS * 2, do_sample=False, max_new_tokens=NEW_TOKENS, ignore_eos=True)
    assert [r.generated_text for r in batch_cached] == [r.generated_text for r in batch_uncached]


def test_a_hash_collision_is_a_miss(checkpoint, oracle, pipeline, monkeypatch):
    monkeypatch.setattr(PrefixCache, "key", staticmethod(lambda parent, tokens: 42))  # every block collides
    path = checkpoint("gqa")
    prompts = ["The old man told stories about the sea", "The weather was cold and wet, so we stayed inside"]
    references = [oracle(path).greedy(p, NEW_TOKENS, ignore_eos=True) for p in prompts]
    pipe = pipeline(path, inference_engine_config={"state_manager": {"kv_block_size": 2}})
    assert_texts_match(_run_one_by_one(pipe, prompts), references)


@pytest.mark.parametrize("blocks", [12])
def test_cached_blocks_are_evicted_under_pressure_without_changing_output(checkpoint, oracle, pipeline, blocks):
    path = checkpoint("gqa")
    prompts = PROMPTS[:3] + ["The market was busy with farmers selling eggs", SHARED + " they"]
    references = [oracle(path).greedy(p, NEW_TOKENS, ignore_eos=True) for p in prompts]
    tight = {"state_manager": {"kv_block_size": 8, "memory_config": {"mode": "allocate", "size": blocks}}}
    pipe = pipeline(path, inference_engine_config=tight)
    assert_texts_match(_run_one_by_one(pipe, prompts), references)
    assert pipe.engine.scheduler.kv.allocator.num_free == blocks, "every block is free again (cached ones stay evictable)"
