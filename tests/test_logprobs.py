"""Log-probabilities of generated tokens (vLLM's ``logprobs``: the raw logits' float32 log-softmax),
compared with HF transformers' own log-softmax of its logits over the same tokens."""

import pytest
import torch

from support.oracle import hf_token_logprobs

PROMPTS = ["The old man", "Once upon a time there was"]


@pytest.fixture(scope="module")
def setup(checkpoint, oracle, pipeline):
    path = checkpoint("gqa")
    return pipeline(path), oracle(path)


def assert_matches_hf(hf, prompt, response, k):
    chosen, top_values, top_ids = hf_token_logprobs(hf.model, hf.encode(prompt), response.token_ids, max(k, 1))
    ours = response.logprobs
    assert [e["token_id"] for e in ours] == response.token_ids
    torch.testing.assert_close(torch.tensor([e["logprob"] for e in ours]), chosen, atol=1e-4, rtol=0)
    if k:
        torch.testing.assert_close(torch.tensor([[t["logprob"] for t in e["top"]] for e in ours]), top_values,
                                   atol=1e-4, rtol=0)
        # ids may swap only where HF's own values tie within the tolerance
        for entry, ids, values in zip(ours, top_ids.tolist(), top_values.tolist()):
            for ours_top, hf_id, hf_value in zip(entry["top"], ids, values):
                assert ours_top["token_id"] == hf_id or abs(hf_value - ours_top["logprob"]) < 1e-4
    else:
        assert all(e["top"] == [] for e in ours)


@pytest.mark.parametrize("k", [0, 1, 5, 20])
def test_greedy_logprobs_match_hf(setup, k):
    pipe, hf = setup
    responses = pipe(PROMPTS, max_new_tokens=10, do_sample=False, logprobs=k)
    for prompt, response in zip(PROMPTS, responses):
        assert response.token_ids == list(hf.greedy(prompt, 10).new_ids)
        assert_matches_hf(hf, prompt, response, k)
        assert response.logprobs[0]["token"] == hf.tokenizer.decode([response.token_ids[0]])


def test_sampled_logprobs_are_of_the_raw_logits_not_the_tempered_ones(setup):
    pipe, hf = setup
    responses = pipe(PROMPTS, max_new_tokens=12, do_sample=True, temperature=0.5, top_k=5, seed=3, logprobs=3)
    for prompt, response in zip(PROMPTS, responses):
        assert_matches_hf(hf, prompt, response, 3)


def test_without_logprobs_none_are_returned_but_token_ids_are(setup):
    pipe, hf = setup
    [response] = pipe(PROMPTS[:1], max_new_tokens=6, do_sample=False)
    assert response.logprobs is None and response.token_ids == list(hf.greedy(PROMPTS[0], 6).new_ids)


@pytest.mark.parametrize("value", [-1, 21, 2.5])
def test_logprobs_beyond_vllms_limits_are_refused_by_name(setup, value):
    pipe, _ = setup
    with pytest.raises(ValueError, match="logprobs"):
        pipe(PROMPTS[:1], max_new_tokens=2, logprobs=value)


def test_in_a_mixed_batch_only_the_rows_that_asked_get_logprobs(setup):
    from mii_core.requests import generation_options

    pipe, hf = setup
    options = [generation_options({"max_new_tokens": 8, "do_sample": False, "logprobs": 2}),
               generation_options({"max_new_tokens": 8, "do_sample": False})]
    asked, plain = pipe.submit(PROMPTS, options).result()
    assert plain.logprobs is None and len(asked.logprobs) == len(asked.token_ids) == 8
    chosen, values, _ = hf_token_logprobs(hf.model, hf.encode(PROMPTS[0]), asked.token_ids, 2)
    torch.testing.assert_close(torch.tensor([lp.logprob for lp in asked.logprobs]), chosen, atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.tensor([lp.top_logprobs for lp in asked.logprobs]), values, atol=1e-4, rtol=0)


def test_generate_tokens_carries_logprobs_from_the_same_ids(setup):
    pipe, hf = setup
    ids = hf.encode(PROMPTS[1])
    [out] = pipe.generate_tokens([ids], max_new_tokens=6, do_sample=False, logprobs=1)
    assert out.token_ids == list(hf.greedy_ids(tuple(ids), 6).new_ids)
    chosen, values, top_ids = hf_token_logprobs(hf.model, ids, out.token_ids, 1)
    torch.testing.assert_close(torch.tensor([lp.logprob for lp in out.logprobs]), chosen, atol=1e-4, rtol=0)
    assert [lp.top_ids[0] for lp in out.logprobs] == top_ids[:, 0].tolist()


def test_streamed_pieces_carry_the_same_logprobs_as_the_whole_answer(setup):
    pipe, _ = setup
    [whole] = pipe(PROMPTS[:1], max_new_tokens=8, do_sample=False, logprobs=2)
    pieces = list(pipe(PROMPTS[:1], max_new_tokens=8, do_sample=False, logprobs=2, stream=True))
    assert [e for piece in pieces for e in piece.logprobs or []] == whole.logprobs
