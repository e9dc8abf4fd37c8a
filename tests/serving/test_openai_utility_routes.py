"""vLLM's utility routes and extra fields that clients (guidellm, lm-eval, the openai client) rely on:
/health, /v1/models/{id}, /tokenize, /detokenize, /tokenizer_info, ignore_eos; checked against the
checkpoint's own tokenizer and HF greedy decoding."""

import openai
import pytest
import requests

MESSAGES = [{"role": "user", "content": "Say something about rivers."}]


def test_health_answers_200_while_serving(api):
    _, _, url = api
    response = requests.get(f"{url}/health", timeout=30)
    assert (response.status_code, response.content) == (200, b"")


def test_version_is_mii_cores(api):
    _, _, url = api
    from importlib.metadata import version

    assert requests.get(f"{url}/version", timeout=30).json() == {"version": version("mii-core")}


def test_a_request_id_is_echoed_on_answers_and_errors(api):
    client, _, url = api
    raw = client.with_raw_response.completions.create(model="demo", prompt="rivers", max_tokens=2,
                                                      extra_headers={"X-Request-Id": "trace-42"})
    assert raw.headers["x-request-id"] == "trace-42"
    refused = requests.post(f"{url}/v1/completions", json={"model": "demo", "prompt": "x", "max_tokens": -1},
                            headers={"X-Request-Id": "trace-43"}, timeout=30)
    assert refused.status_code == 400 and refused.headers["X-Request-Id"] == "trace-43"
    fresh = {requests.get(f"{url}/health", timeout=30).headers["X-Request-Id"] for _ in range(2)}
    assert len(fresh) == 2 and all(len(i) == 32 for i in fresh)  # one new id per request without one


def test_a_bad_request_id_is_a_400_naming_the_header(api):
    _, _, url = api
    answer = requests.get(f"{url}/v1/models", headers={"X-Request-Id": "x" * 300}, timeout=30)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "bad_request_id"
    assert "X-Request-Id" in answer.json()["error"]["message"]
    assert requests.get(f"{url}/health", timeout=30).status_code == 200  # still serving


def test_a_model_is_retrieved_by_its_id(api):
    client, _, _ = api
    model = client.models.retrieve("demo")
    assert (model.id, model.object, model.owned_by) == ("demo", "model", "mii-core")


def test_an_unknown_model_is_a_json_404_naming_it(api):
    client, _, url = api
    with pytest.raises(openai.NotFoundError) as failure:
        client.models.retrieve("gpt-4")
    assert "'gpt-4' does not exist" in failure.value.message
    body = requests.get(f"{url}/v1/models/org/gpt-4", timeout=30).json()
    assert body["error"]["code"] == "model_not_found" and "org/gpt-4" in body["error"]["message"]


@pytest.mark.parametrize("special", [True, False])
def test_tokenize_gives_the_tokenizers_ids(api, special):
    _, hf, url = api
    text = "The old man and the sea"
    answer = requests.post(f"{url}/tokenize", json={"model": "demo", "prompt": text, "add_special_tokens": special,
                                                    "return_token_strs": True}, timeout=30).json()
    expected = hf.tokenizer(text, add_special_tokens=special)["input_ids"]
    assert (answer["tokens"], answer["count"]) == (expected, len(expected))
    assert answer["token_strs"] == hf.tokenizer.convert_ids_to_tokens(expected)


def test_tokenize_renders_chat_messages_with_the_template(api):
    _, hf, url = api
    answer = requests.post(f"{url}/tokenize", json={"messages": MESSAGES}, timeout=30).json()
    expected = hf.tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True)
    expected = expected["input_ids"] if hasattr(expected, "keys") else expected
    assert answer["tokens"] == list(expected) and answer["token_strs"] is None


def test_detokenize_inverts_tokenize(api):
    _, hf, url = api
    ids = hf.tokenizer("The old man and the sea")["input_ids"]
    answer = requests.post(f"{url}/detokenize", json={"tokens": ids}, timeout=30).json()
    assert answer == {"prompt": hf.tokenizer.decode(ids)}


def test_tokenizer_info_names_the_special_tokens(api):
    _, hf, url = api
    info = requests.get(f"{url}/tokenizer_info", timeout=30).json()
    assert info["tokenizer_class"] == type(hf.tokenizer).__name__
    assert (info["eos_token"], info["chat_template"]) == (hf.tokenizer.eos_token, hf.tokenizer.chat_template)


@pytest.mark.parametrize("route, body, field", [
    ("/tokenize", {"prompt": 3}, "prompt"),
    ("/tokenize", {"prompt": "a", "messages": MESSAGES}, "prompt"),
    ("/tokenize", {"prompt": "a", "add_special_tokens": "yes"}, "add_special_tokens"),
    ("/tokenize", {"prompt": "a", "truncate": 3}, "truncate"),
    ("/detokenize", {"tokens": [1, -2]}, "tokens"),
    ("/detokenize", {"tokens": [1, 10**9]}, "tokens"),
])
def test_bad_tokenizer_requests_are_400s_naming_the_field(api, route, body, field):
    _, _, url = api
    response = requests.post(f"{url}{route}", json=body, timeout=30)
    assert response.status_code == 400 and field in response.json()["error"]["message"]


def test_ignore_eos_generates_max_tokens_as_hf_without_eos(api):
    client, hf, _ = api
    completion = client.completions.create(model="demo", prompt="The old man", max_tokens=40, temperature=0,
                                           extra_body={"ignore_eos": True})
    reference = hf.greedy("The old man", 40, ignore_eos=True)
    assert hf.eos_id not in reference.new_ids  # else "emit and go on" and "suppress" could differ
    assert (completion.choices[0].text, completion.choices[0].finish_reason) == (reference.text, "length")
    assert completion.usage.completion_tokens == 40


def test_ignore_eos_on_chat(api):
    client, _, _ = api
    chat = client.chat.completions.create(model="demo", messages=MESSAGES, max_tokens=30, temperature=0,
                                          extra_body={"ignore_eos": True})
    assert (chat.choices[0].finish_reason, chat.usage.completion_tokens) == ("length", 30)


def test_ignore_eos_must_be_a_flag(api):
    client, _, _ = api
    with pytest.raises(openai.BadRequestError) as failure:
        client.completions.create(model="demo", prompt="a", extra_body={"ignore_eos": "yes"})
    assert "ignore_eos must be true or false" in failure.value.message


# ---- prompts as token ids (lm-eval's local-completions sends these) ----

def ids_of(hf, text):
    return hf.encode(text)[1:] if hf.tokenizer.bos_token_id is not None else hf.encode(text)  # no BOS: raw ids


def test_a_token_id_prompt_decodes_as_hf_greedy_from_the_same_ids(api):
    client, hf, _ = api
    ids = ids_of(hf, "The old man")
    completion = client.completions.create(model="demo", prompt=ids, max_tokens=12, temperature=0)
    reference = hf.greedy_ids(tuple(ids), 12)
    assert (completion.choices[0].text, completion.choices[0].finish_reason) == (reference.text,
                                                                                 reference.finish_reason)
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (len(ids),
                                                                                    reference.generated_length)


def test_a_list_of_token_id_prompts_with_n_and_echo(api):
    client, hf, _ = api
    prompts = [ids_of(hf, "The old man"), hf.encode("Once upon a time")]
    completion = client.completions.create(model="demo", prompt=prompts, max_tokens=8, temperature=0, n=2,
                                           echo=True)
    expected = [hf.tokenizer.decode(ids) + hf.greedy_ids(tuple(ids), 8).text for ids in prompts for _ in range(2)]
    assert [c.text for c in completion.choices] == expected
    assert completion.usage.prompt_tokens == sum(len(ids) for ids in prompts)


def test_token_id_prompts_stream(api):
    client, hf, _ = api
    ids = ids_of(hf, "The old man")
    chunks = list(client.completions.create(model="demo", prompt=[ids], max_tokens=12, temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == hf.greedy_ids(tuple(ids), 12).text


# ---- logprobs: the raw logits' log-softmax, against HF's own over the same tokens ----

@pytest.mark.parametrize("k", [0, 3])
def test_completion_logprobs_match_hf(api, k):
    client, hf, _ = api
    completion = client.completions.create(model="demo", prompt="The old man", max_tokens=8, temperature=0, logprobs=k)
    reference = hf.greedy("The old man", 8)
    from support.oracle import hf_token_logprobs

    chosen, values, ids = hf_token_logprobs(hf.model, reference.prompt_ids, reference.new_ids, max(k, 1))
    got = completion.choices[0].logprobs
    assert got.tokens == [hf.tokenizer.decode([t]) for t in reference.new_ids]
    assert got.token_logprobs == pytest.approx(chosen.tolist(), abs=1e-4)
    assert got.text_offset == [sum(len(t) for t in got.tokens[:i]) for i in range(len(got.tokens))]
    for position, top in enumerate(got.top_logprobs):
        expected = {hf.tokenizer.decode([i]): v for i, v in zip(ids[position].tolist()[:k], values[position].tolist())}
        expected[got.tokens[position]] = chosen[position].item()  # the chosen token is always listed (vLLM)
        assert top.keys() == expected.keys()
        assert list(top.values()) == pytest.approx([expected[t] for t in top], abs=1e-4)


def test_chat_logprobs_match_hf(api):
    import torch

    from support.oracle import hf_token_logprobs

    client, hf, _ = api
    chat = client.chat.completions.create(model="demo", messages=MESSAGES, max_tokens=6, temperature=0,
                                          logprobs=True, top_logprobs=2)
    prompt = hf.tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True)
    prompt = list(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)
    new_ids = hf.greedy_ids(tuple(prompt), 6).new_ids
    chosen, values, ids = hf_token_logprobs(hf.model, prompt, new_ids, 2)
    content = chat.choices[0].logprobs.content
    assert [c.token for c in content] == [hf.tokenizer.decode([t]) for t in new_ids]
    torch.testing.assert_close(torch.tensor([c.logprob for c in content]), chosen, atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.tensor([[t.logprob for t in c.top_logprobs] for c in content]), values,
                               atol=1e-4, rtol=0)
    assert content[0].bytes == list(content[0].token.encode("utf-8"))


@pytest.mark.parametrize("ask, names", [
    (dict(top_logprobs=2), "top_logprobs needs logprobs: true"),
    (dict(logprobs=True, top_logprobs=21), "top_logprobs must be in [0, 20]"),
])
def test_chat_logprobs_out_of_bounds_are_refused_by_name(api, ask, names):
    client, _, _ = api
    with pytest.raises(openai.BadRequestError) as failure:
        client.chat.completions.create(model="demo", messages=MESSAGES, max_tokens=2, **ask)
    assert names in failure.value.message


def test_without_logprobs_the_answer_says_null(api):
    client, _, _ = api
    completion = client.completions.create(model="demo", prompt="The old man", max_tokens=2, temperature=0)
    assert completion.choices[0].logprobs is None


def test_mii_route_returns_logprobs_and_token_ids_when_asked(api):
    from support.oracle import hf_token_logprobs

    _, hf, url = api
    [answer] = requests.post(f"{url}/mii/demo", json={"prompts": "The old man", "max_new_tokens": 5,
                                                       "do_sample": False, "logprobs": 1}, timeout=60).json()
    reference = hf.greedy("The old man", 5)
    chosen, values, ids = hf_token_logprobs(hf.model, reference.prompt_ids, reference.new_ids, 1)
    assert answer["token_ids"] == list(reference.new_ids)
    assert [e["logprob"] for e in answer["logprobs"]] == pytest.approx(chosen.tolist(), abs=1e-4)
    assert [e["top"][0]["token_id"] for e in answer["logprobs"]] == ids[:, 0].tolist()


def test_mii_route_streams_logprobs_and_the_prompts(api):
    import json

    from support.oracle import hf_token_logprobs

    _, hf, url = api
    response = requests.post(f"{url}/mii/demo", json={"prompts": "The old man", "max_new_tokens": 5, "do_sample": False,
                                                       "logprobs": 1, "prompt_logprobs": 0, "stream": True}, timeout=60)
    pieces = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")]
    reference = hf.greedy("The old man", 5)
    ids = list(reference.prompt_ids)
    assert pieces[0]["prompt_token_ids"] == ids and pieces[0]["prompt_logprobs"][0] is None
    prompt_chosen, _, _ = hf_token_logprobs(hf.model, ids[:1], ids[1:], 1)
    assert [e["logprob"] for e in pieces[0]["prompt_logprobs"][1:]] == pytest.approx(prompt_chosen.tolist(), abs=1e-4)
    entries = [e for piece in pieces for e in piece.get("logprobs") or []]
    chosen, _, _ = hf_token_logprobs(hf.model, ids, reference.new_ids, 1)
    assert [e["token_id"] for e in entries] == list(reference.new_ids)
    assert [e["logprob"] for e in entries] == pytest.approx(chosen.tolist(), abs=1e-4)
