"""The OpenAI-compatible routes, through the official `openai` client as a user would use it."""

import openai
import pytest
import requests
import torch

from support.prompts import MIXED_PROMPTS


def test_models_lists_the_deployment(api):
    client, _, _ = api
    assert [m.id for m in client.models.list().data] == ["demo"]


def test_greedy_completion_matches_hf_with_usage(api):
    client, hf, _ = api
    completion = client.completions.create(model="demo", prompt="The old man", max_tokens=12, temperature=0)
    reference = hf.greedy("The old man", 12)
    assert [(c.index, c.text, c.finish_reason) for c in completion.choices] == [(0, reference.text, reference.finish_reason)]
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == \
        (reference.prompt_length, reference.generated_length, reference.prompt_length + reference.generated_length)


def test_several_prompts_and_n_come_back_in_openais_order(api):
    client, hf, _ = api
    prompts = MIXED_PROMPTS[:2]
    completion = client.completions.create(model="demo", prompt=prompts, max_tokens=8, temperature=0, n=2)
    expected = [hf.greedy(p, 8).text for p in prompts for _ in range(2)]
    assert [c.index for c in completion.choices] == [0, 1, 2, 3]
    assert [c.text for c in completion.choices] == expected
    assert completion.usage.prompt_tokens == sum(hf.greedy(p, 8).prompt_length for p in prompts)


def test_n_sampled_choices_with_a_seed_differ_and_repeat(api):
    client, _, _ = api
    ask = dict(model="demo", prompt="river", max_tokens=12, temperature=1.0, n=3, seed=5)
    first = [c.text for c in client.completions.create(**ask).choices]
    again = [c.text for c in client.completions.create(**ask).choices]
    assert first == again and len(set(first)) == 3


def test_a_stop_list_cuts_at_the_earliest_stop(api):
    client, hf, _ = api
    reference = hf.greedy("The old man", 24, ignore_eos=True).text
    early, late = reference[4:7], reference[12:15]
    completion = client.completions.create(model="demo", prompt="The old man", max_tokens=24, temperature=0,
                                           stop=[late, early])
    assert (completion.choices[0].text, completion.choices[0].finish_reason) == (reference[:reference.find(early)], "stop")


def test_streamed_completion_adds_up_and_reports_usage(api):
    client, hf, _ = api
    chunks = list(client.completions.create(model="demo", prompt="The old man", max_tokens=12, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    texts = [c.choices[0].text for c in chunks if c.choices]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    reference = hf.greedy("The old man", 12)
    assert "".join(texts) == reference.text  # in as many chunks as timing gives (waiting ones are joined)
    assert finishes == [None] * (len(finishes) - 1) + [reference.finish_reason]
    assert chunks[-1].usage.completion_tokens == reference.generated_length


def chat_reference(hf, messages, max_new_tokens):
    """HF greedy on the ids the tokenizer's chat template gives (the oracle for chat)."""
    ids = hf.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    with torch.no_grad():
        out = hf.model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=max_new_tokens)
    new = out[0, len(ids):].tolist()
    finish = "stop" if new[-1] == hf.eos_id else "length"
    return hf.tokenizer.decode(new, skip_special_tokens=True), finish, len(ids), len(new)


MESSAGES = [{"role": "system", "content": "The old man"}, {"role": "user", "content": "the river bank"}]


def test_chat_completion_uses_the_tokenizers_chat_template(api):
    client, hf, _ = api
    completion = client.chat.completions.create(model="demo", messages=MESSAGES, max_tokens=10, temperature=0)
    text, finish, prompt_tokens, generated = chat_reference(hf, MESSAGES, 10)
    choice = completion.choices[0]
    assert (choice.message.role, choice.message.content, choice.finish_reason) == ("assistant", text, finish)
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (prompt_tokens, generated)


def test_streamed_chat_completion_adds_up(api):
    client, hf, _ = api
    chunks = list(client.chat.completions.create(model="demo", messages=MESSAGES, max_tokens=10, temperature=0,
                                                 stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert (text, chunks[-1].choices[0].finish_reason) == chat_reference(hf, MESSAGES, 10)[:2]


@pytest.mark.parametrize("ask, status, names", [
    (dict(model="gpt-4", prompt="river"), 404, "model 'gpt-4' does not exist"),
    (dict(model="demo", prompt="river", logprobs=21), 400, "logprobs must be in [0, 20]"),
    (dict(model="demo", prompt="river", presence_penalty=2.5), 400, "presence_penalty must be in [-2.0, 2.0]"),
    (dict(model="demo", prompt="river", max_tokens=0), 400, "max_tokens=0 (scoring the prompt"),
    (dict(model="demo", prompt="river", max_tokens=-1), 400, "max_tokens must be in"),
    (dict(model="demo", prompt="river", temperature=3), 400, "temperature must be in"),
    (dict(model="demo", prompt=[1, "a"]), 400, "prompt must be"),
    (dict(model="demo", prompt=[[1, 2], []]), 400, "prompt must be"),
    (dict(model="demo", prompt=[1, 10**7]), 400, "token ids must lie in [0,"),
])
def test_what_cannot_be_honoured_is_refused_by_name(api, ask, status, names):
    client, _, _ = api
    with pytest.raises(openai.APIStatusError) as failure:
        client.completions.create(**ask)
    assert failure.value.status_code == status
    assert names in failure.value.message


def test_unknown_arguments_are_refused(api):
    _, _, url = api
    response = requests.post(f"{url}/v1/completions", json={"model": "demo", "prompt": "river", "best_guess": 1})
    assert response.status_code == 400 and "best_guess" in response.json()["error"]["message"]
