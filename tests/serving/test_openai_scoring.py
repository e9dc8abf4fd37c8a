"""Prompt scoring and streamed logprobs on the OpenAI routes (issue 19), through the official `openai` client
and raw HTTP as lm-eval sends it, against HF transformers' float32 log-softmax over the same tokens."""

import openai
import pytest
import requests
import torch

from support.oracle import hf_token_logprobs

PROMPT = "The old man and the river"


def hf_prompt_logprobs(hf, ids, k=1):
    """HF's (logprob of each prompt token after the first, its top-k values)."""
    chosen, values, _ = hf_token_logprobs(hf.model, ids[:1], ids[1:], k)
    return chosen, values


def assert_offsets_continuous(logprobs):
    offsets, tokens = logprobs.text_offset, logprobs.tokens
    assert offsets[0] == 0
    assert all(offsets[i + 1] == offsets[i] + len(tokens[i]) for i in range(len(tokens) - 1))


def test_echo_with_logprobs_scores_the_prompt_then_the_generated_tokens(api):
    client, hf, _ = api
    ids, reference = hf.encode(PROMPT), hf.greedy(PROMPT, 4)
    choice = client.completions.create(model="demo", prompt=PROMPT, max_tokens=4, temperature=0, echo=True,
                                       logprobs=2).choices[0]
    assert choice.text == PROMPT + reference.text
    lp = choice.logprobs
    assert len(lp.tokens) == len(ids) + 4 and lp.tokens[0] == hf.tokenizer.decode([ids[0]])
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    prompt_chosen, _ = hf_prompt_logprobs(hf, ids)
    generated, _, _ = hf_token_logprobs(hf.model, ids, list(reference.new_ids), 1)
    torch.testing.assert_close(torch.tensor(lp.token_logprobs[1:]), torch.cat([prompt_chosen, generated]),
                               atol=1e-4, rtol=0)
    assert all(len(top) in (2, 3) for top in lp.top_logprobs[1:])  # 2 alternatives (+ the token when not among them)
    assert_offsets_continuous(lp)


def test_max_tokens_0_with_echo_scores_without_generating(api):
    client, hf, _ = api
    ids = hf.encode(PROMPT)
    completion = client.completions.create(model="demo", prompt=PROMPT, max_tokens=0, echo=True, logprobs=0)
    choice = completion.choices[0]
    assert (choice.text, choice.finish_reason, len(choice.logprobs.tokens)) == (PROMPT, "length", len(ids))
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (len(ids), 0)
    torch.testing.assert_close(torch.tensor(choice.logprobs.token_logprobs[1:]), hf_prompt_logprobs(hf, ids)[0],
                               atol=1e-4, rtol=0)


def test_max_tokens_0_without_echo_is_refused_by_name(api):
    client, _, _ = api
    with pytest.raises(openai.BadRequestError) as failure:
        client.completions.create(model="demo", prompt=PROMPT, max_tokens=0)
    assert "max_tokens=0" in failure.value.message and "echo" in failure.value.message


def test_lm_eval_loglikelihood_batch_matches_hf(api):
    """lm-eval's local-completions loglikelihood request: token-id prompts (context + continuation), echo,
    logprobs 1, max_tokens 1, batched; it sums token_logprobs over the continuation."""
    _, hf, url = api
    pairs = [("The old man", " and the river"), ("Once upon a time", " there was")]
    prompts = [hf.encode(context) + hf.tokenizer.encode(more, add_special_tokens=False) for context, more in pairs]
    body = {"model": "demo", "prompt": prompts, "max_tokens": 1, "echo": True, "logprobs": 1, "temperature": 0}
    answer = requests.post(f"{url}/v1/completions", json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    choices = sorted(answer.json()["choices"], key=lambda c: c["index"])
    for (context, _), ids, choice in zip(pairs, prompts, choices):
        scored = choice["logprobs"]["token_logprobs"]
        assert scored[0] is None and len(scored) == len(ids) + 1
        start = len(hf.encode(context))
        chosen, _ = hf_prompt_logprobs(hf, ids)
        assert sum(scored[start:len(ids)]) == pytest.approx(chosen[start - 1:].sum().item(), abs=1e-3)
        torch.testing.assert_close(torch.tensor(scored[1:len(ids)]), chosen, atol=1e-4, rtol=0)


def test_streamed_completion_logprobs_match_hf_with_continuous_offsets(api):
    client, hf, _ = api
    ids, reference = hf.encode(PROMPT), hf.greedy(PROMPT, 8)
    chunks = [c for c in client.completions.create(model="demo", prompt=PROMPT, max_tokens=8, temperature=0,
                                                   logprobs=1, stream=True) if c.choices]
    assert chunks  # as many as timing gives: a router behind its replica joins the waiting ones
    tokens = [t for c in chunks for t in c.choices[0].logprobs.tokens]
    values = [v for c in chunks for v in c.choices[0].logprobs.token_logprobs]
    offsets = [o for c in chunks for o in c.choices[0].logprobs.text_offset]
    assert "".join(c.choices[0].text for c in chunks) == reference.text and len(values) == 8
    generated, _, _ = hf_token_logprobs(hf.model, ids, list(reference.new_ids), 1)
    torch.testing.assert_close(torch.tensor(values), generated, atol=1e-4, rtol=0)
    assert offsets == [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]


def test_streamed_chat_logprobs_match_the_unstreamed_ones(api):
    client, _, _ = api
    ask = dict(model="demo", messages=[{"role": "user", "content": "the river bank"}], max_tokens=6, temperature=0,
               logprobs=True, top_logprobs=2)
    whole = client.chat.completions.create(**ask).choices[0].logprobs.content
    chunks = client.chat.completions.create(**ask, stream=True)
    streamed = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert [t.token for t in streamed] == [t.token for t in whole] and len(whole) == 6
    torch.testing.assert_close(torch.tensor([t.logprob for t in streamed]), torch.tensor([t.logprob for t in whole]),
                               atol=1e-5, rtol=0)
    assert all(len(t.top_logprobs) == 2 for t in streamed)


def test_echo_streams_as_its_own_first_chunk(api):
    client, hf, _ = api
    chunks = [c for c in client.completions.create(model="demo", prompt=PROMPT, max_tokens=6, temperature=0,
                                                   echo=True, logprobs=0, stream=True) if c.choices]
    first = chunks[0].choices[0]
    assert first.text == PROMPT and len(first.logprobs.tokens) == len(hf.encode(PROMPT))
    assert first.logprobs.token_logprobs[0] is None
    assert "".join(c.choices[0].text for c in chunks[1:]) == hf.greedy(PROMPT, 6).text
    assert chunks[1].choices[0].logprobs.text_offset[0] == len("".join(first.logprobs.tokens))


def test_continuous_usage_stats_put_usage_in_every_chunk(api):
    client, hf, _ = api
    chunks = list(client.completions.create(model="demo", prompt=PROMPT, max_tokens=6, temperature=0, stream=True,
                                            stream_options={"include_usage": True, "continuous_usage_stats": True}))
    assert all(c.usage is not None for c in chunks)
    counts = [c.usage.completion_tokens for c in chunks]
    assert counts == sorted(counts) and counts[-1] == hf.greedy(PROMPT, 6).generated_length
    assert {c.usage.prompt_tokens for c in chunks} == {len(hf.encode(PROMPT))}


def test_vllms_prompt_logprobs_field_on_completions_and_chat(api):
    client, hf, _ = api
    ids = hf.encode(PROMPT)
    choice = client.completions.create(model="demo", prompt=PROMPT, max_tokens=2, temperature=0,
                                       extra_body={"prompt_logprobs": 2}).model_dump()["choices"][0]
    scored = choice["prompt_logprobs"]
    assert scored[0] is None and len(scored) == len(ids)
    chosen, values = hf_prompt_logprobs(hf, ids, 2)
    ours = [entry[str(token)]["logprob"] for entry, token in zip(scored[1:], ids[1:])]
    torch.testing.assert_close(torch.tensor(ours), chosen, atol=1e-4, rtol=0)
    ranked = [sorted((v for v in entry.values() if v["rank"] is not None), key=lambda v: v["rank"])
              for entry in scored[1:]]
    torch.testing.assert_close(torch.tensor([[v["logprob"] for v in r] for r in ranked]), values, atol=1e-4, rtol=0)
    chat = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "the river"}],
                                          max_tokens=2, extra_body={"prompt_logprobs": 0}).model_dump()
    assert chat["prompt_logprobs"][0] is None and len(chat["prompt_logprobs"]) == chat["usage"]["prompt_tokens"]


def test_prompt_logprobs_with_stream_are_refused_by_name(api):
    client, _, _ = api
    with pytest.raises(openai.BadRequestError) as failure:
        client.completions.create(model="demo", prompt=PROMPT, max_tokens=2, stream=True,
                                  extra_body={"prompt_logprobs": 1})
    assert "prompt_logprobs" in failure.value.message
