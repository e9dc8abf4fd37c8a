"""Scheduling under pressure: chunked prefill, a KV cache too small for the batch, many prompts."""

import math

import pytest

from support.compare import assert_responses_match
from support.prompts import MIXED_PROMPTS, many_prompts

NEW_TOKENS = 20
BLOCK_SIZE = 4
TOKEN_BUDGET = 8


def tight_kv_config(oracle, path, prompts, new_tokens):
    """A KV cache of ~1.5 times what the longest sequence needs: it fits, but not all at once."""
    longest = max(len(oracle(path).encode(p)) for p in prompts)
    blocks_for_longest = math.ceil((longest + new_tokens) / BLOCK_SIZE)
    n_blocks = blocks_for_longest * 3 // 2
    state_manager = {"kv_block_size": BLOCK_SIZE, "memory_config": {"mode": "allocate", "size": n_blocks}}
    return {"state_manager": state_manager}, n_blocks


def test_prefill_chunked_by_small_token_budget_matches_hf(checkpoint, oracle, pipeline):
    path = checkpoint("gqa")
    references = [oracle(path).greedy(p, NEW_TOKENS, ignore_eos=True) for p in MIXED_PROMPTS]
    assert max(g.prompt_length for g in references) > 4 * TOKEN_BUDGET, "prompts must need several chunks"
    # The sequence count is lowered with the token budget: a batch can't hold more sequences than tokens.
    budget = {"state_manager": {"max_ragged_batch_size": TOKEN_BUDGET, "max_ragged_sequence_count": TOKEN_BUDGET}}
    pipe = pipeline(path, inference_engine_config=budget)
    responses = pipe(MIXED_PROMPTS, do_sample=False, max_new_tokens=NEW_TOKENS, ignore_eos=True)
    assert_responses_match(responses, references)


def test_kv_cache_too_small_for_batch_still_matches_hf(checkpoint, oracle, pipeline):
    path = checkpoint("gqa")
    references = [oracle(path).greedy(p, NEW_TOKENS, ignore_eos=True) for p in MIXED_PROMPTS]
    config, n_blocks = tight_kv_config(oracle, path, MIXED_PROMPTS, NEW_TOKENS)
    blocks_for_all = sum(math.ceil((g.prompt_length + NEW_TOKENS) / BLOCK_SIZE) for g in references)
    assert blocks_for_all > n_blocks, "the batch must not fit in the cache at once"
    pipe = pipeline(path, inference_engine_config=config)
    responses = pipe(MIXED_PROMPTS, do_sample=False, max_new_tokens=NEW_TOKENS, ignore_eos=True)
    assert_responses_match(responses, references)


@pytest.mark.parametrize("kv_cache", ["default", "tight"])
def test_sixty_four_prompts_all_finish(checkpoint, oracle, pipeline, kv_cache):
    path = checkpoint("gqa")
    prompts = many_prompts(64)
    new_tokens = 16
    options = {}
    if kv_cache == "tight":
        options["inference_engine_config"], _ = tight_kv_config(oracle, path, prompts, new_tokens)
    responses = pipeline(path, **options)(prompts, do_sample=False, max_new_tokens=new_tokens, ignore_eos=True)
    assert len(responses) == 64
    assert [r.generated_length for r in responses] == [new_tokens] * 64
    assert {r.finish_reason for r in responses} == {"length"}
    hf = oracle(path)
    assert [r.prompt_length for r in responses] == [len(hf.encode(p)) for p in prompts]
    # Every 8th prompt against HF: enough to catch cross-sequence mix-ups without 64 HF runs.
    sampled = range(0, 64, 8)
    references = [hf.greedy(prompts[i], new_tokens, ignore_eos=True) for i in sampled]
    assert_responses_match([responses[i] for i in sampled], references)


def test_default_length_stops_at_kv_cache_size_and_oversize_request_is_refused(checkpoint, oracle, pipeline):
    """Without max_new_tokens a sequence grows until it alone fills the cache (4 blocks x 8 tokens
    = 32 tokens here, far below max_position_embeddings); asking for more is a clear error."""
    path = checkpoint("gqa")
    prompt = MIXED_PROMPTS[1]
    prompt_len = len(oracle(path).encode(prompt))
    assert prompt_len < 24, "fixture: the prompt must leave room in a 32-token cache"
    pipe = pipeline(path, inference_engine_config={
        "state_manager": {"kv_block_size": 8, "memory_config": {"mode": "allocate", "size": 4}}})
    [response] = pipe([prompt], do_sample=False, ignore_eos=True)
    assert (response.generated_length, response.finish_reason) == (32 - prompt_len, "length")
    expected = oracle(path).greedy(prompt, 32 - prompt_len, ignore_eos=True)
    assert response.generated_text == expected.text
    with pytest.raises(ValueError, match="max_new_tokens"):
        pipe([prompt], do_sample=False, max_new_tokens=40)


def test_fresh_kv_cache_holds_only_finite_values(checkpoint):
    """Attention weighs masked slots by exactly 0, and 0 x NaN is NaN: memory that was never
    written must not hold NaN or Inf (it did once, when the cache came from torch.empty, and
    outputs then depended on leftover memory)."""
    import mii_core
    import torch

    pipe = mii_core.pipeline(str(checkpoint("gqa")))
    try:
        assert bool(torch.isfinite(pipe.engine.kv_cache.data).all())
    finally:
        pipe.destroy()
