"""vLLM's utility routes and extra fields that clients (guidellm, lm-eval, the openai client) rely on:
/health, /v1/models/{id}, /tokenize, /detokenize, /tokenizer_info, ignore_eos; checked against the
checkpoint's own tokenizer and HF greedy decoding."""

import openai
import pytest
import requests

MESSAGES = [{"role": "user", "content": "Say something about rivers."}]


@pytest.fixture(scope="module")
def api(demo, chat_checkpoint, oracle):
    host, port = demo.record.front_ends["rest"]
    client = openai.OpenAI(base_url=f"http://localhost:{port}/v1", api_key="unused", max_retries=0, timeout=120)
    return client, oracle(chat_checkpoint), f"http://localhost:{port}"


def test_health_answers_200_while_serving(api):
    _, _, url = api
    response = requests.get(f"{url}/health", timeout=30)
    assert (response.status_code, response.content) == (200, b"")


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
