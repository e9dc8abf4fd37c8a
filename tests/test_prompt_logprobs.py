"""Prompt log-probabilities (vLLM's ``prompt_logprobs``): every prompt token after the first scored by the
raw logits' float32 log-softmax at the position before it, compared with HF transformers' own over the
same tokens, for a prompt computed in one step, in chunks, beside plain requests and after its prefix
was cached."""

import pytest
import torch

from mii_core.requests import generation_options
from support.oracle import hf_token_logprobs

PROMPTS = ["The old man and the river bank in the old town", "Once upon a time there was"]
CHUNKED = {"state_manager": {"max_ragged_batch_size": 5, "max_ragged_sequence_count": 4, "kv_block_size": 4}}


@pytest.fixture(scope="module")
def path(checkpoint):
    return checkpoint("gqa")


@pytest.fixture(scope="module")
def hf(path, oracle):
    return oracle(path)


def assert_prompt_matches_hf(hf, prompt_ids, prompt_logprobs, k):
    """``prompt_logprobs``: the Response's entries (first None) against HF's scores of the prompt's tokens."""
    assert len(prompt_logprobs) == len(prompt_ids) and prompt_logprobs[0] is None
    entries = prompt_logprobs[1:]
    chosen, top_values, top_ids = hf_token_logprobs(hf.model, prompt_ids[:1], prompt_ids[1:], max(k, 1))
    assert [e["token_id"] for e in entries] == prompt_ids[1:]
    torch.testing.assert_close(torch.tensor([e["logprob"] for e in entries]), chosen, atol=1e-4, rtol=0)
    if not k:
        assert all(e["top"] == [] for e in entries)
        return
    torch.testing.assert_close(torch.tensor([[t["logprob"] for t in e["top"]] for e in entries]), top_values,
                               atol=1e-4, rtol=0)
    for entry, ids, values in zip(entries, top_ids.tolist(), top_values.tolist()):
        for ours, hf_id, hf_value in zip(entry["top"], ids, values):  # ids may swap only where values tie
            assert ours["token_id"] == hf_id or abs(hf_value - ours["logprob"]) < 1e-4


@pytest.mark.parametrize("schedule", [{}, CHUNKED], ids=["whole", "chunked"])
@pytest.mark.parametrize("k", [0, 3])
def test_prompt_logprobs_match_hf(path, hf, pipeline, schedule, k):
    pipe = pipeline(path, inference_engine_config=schedule)
    responses = pipe(PROMPTS, max_new_tokens=4, do_sample=False, prompt_logprobs=k)
    for prompt, response in zip(PROMPTS, responses):
        ids = hf.encode(prompt)
        assert response.prompt_token_ids == ids
        assert_prompt_matches_hf(hf, ids, response.prompt_logprobs, k)
        assert response.token_ids == list(hf.greedy(prompt, 4).new_ids)  # generation itself unchanged


def test_a_batch_mixing_scoring_and_plain_requests(path, hf, pipeline):
    pipe = pipeline(path, inference_engine_config=CHUNKED)
    options = [generation_options({"max_new_tokens": 6, "do_sample": False, "prompt_logprobs": 2, "logprobs": 1}),
               generation_options({"max_new_tokens": 6, "do_sample": False})]
    scored, plain = pipe.submit(PROMPTS, options).result()
    assert plain.prompt_logprobs is None and plain.logprobs is None
    assert plain.token_ids == list(hf.greedy(PROMPTS[1], 6).new_ids)
    assert scored.token_ids == list(hf.greedy(PROMPTS[0], 6).new_ids)
    ids = hf.encode(PROMPTS[0])
    chosen, values, _ = hf_token_logprobs(hf.model, ids[:1], ids[1:], 2)
    torch.testing.assert_close(torch.tensor([lp.logprob for lp in scored.prompt_logprobs]), chosen, atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.tensor([lp.top_logprobs for lp in scored.prompt_logprobs]), values,
                               atol=1e-4, rtol=0)
    generated, _, _ = hf_token_logprobs(hf.model, ids, scored.token_ids, 1)
    torch.testing.assert_close(torch.tensor([lp.logprob for lp in scored.logprobs]), generated, atol=1e-4, rtol=0)


def test_a_cached_prefix_is_scored_all_the_same(path, hf, pipeline):
    """The prompt's blocks are in the prefix cache from a plain request first: scoring recomputes them."""
    pipe = pipeline(path, inference_engine_config=CHUNKED)
    pipe(PROMPTS[:1], max_new_tokens=2, do_sample=False)
    [response] = pipe(PROMPTS[:1], max_new_tokens=2, do_sample=False, prompt_logprobs=1)
    assert_prompt_matches_hf(hf, hf.encode(PROMPTS[0]), response.prompt_logprobs, 1)


def test_streamed_pieces_carry_their_tokens_logprobs_and_the_first_the_prompts(path, hf, pipeline):
    pipe = pipeline(path)
    pieces = list(pipe(PROMPTS[1:], max_new_tokens=8, do_sample=False, logprobs=1, prompt_logprobs=0, stream=True))
    ids = hf.encode(PROMPTS[1])
    assert_prompt_matches_hf(hf, ids, pieces[0].prompt_logprobs, 0)
    assert all(p.prompt_logprobs is None for p in pieces[1:])
    entries = [e for p in pieces for e in p.logprobs or []]
    new_ids = list(hf.greedy(PROMPTS[1], 8).new_ids)
    assert [e["token_id"] for e in entries] == new_ids
    chosen, _, _ = hf_token_logprobs(hf.model, ids, new_ids, 1)
    torch.testing.assert_close(torch.tensor([e["logprob"] for e in entries]), chosen, atol=1e-4, rtol=0)


@pytest.mark.parametrize("value", [-1, 21, 2.5])
def test_prompt_logprobs_beyond_vllms_limits_are_refused_by_name(path, pipeline, value):
    with pytest.raises(ValueError, match="prompt_logprobs"):
        pipeline(path)(PROMPTS[:1], max_new_tokens=2, prompt_logprobs=value)
