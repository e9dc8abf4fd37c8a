"""A deployment of a checkpoint that has no chat template, given one with the ``chat_template`` model option:
OpenAI chat works through the real server and equals HF greedy on the ids transformers renders with that
template. (The refusal without one, naming the option, is checked in tests/test_chat_template_option.py.)"""
import openai
import requests
import torch
from transformers import AutoTokenizer

from support.serving import free_port_block
from test_chat_template_option import MESSAGES, TEMPLATE, expected_ids


def test_chat_with_the_option_matches_hf(deploy, checkpoint, oracle):
    path = checkpoint("gqa")
    client = deploy(path, deployment_name="templated", transports=["rest"], restful_api_port=free_port_block(1),
                    chat_template=TEMPLATE)
    host, port = client.record.front_ends["rest"]
    api = openai.OpenAI(base_url=f"http://localhost:{port}/v1", api_key="unused", max_retries=0, timeout=120)
    completion = api.chat.completions.create(model="templated", messages=MESSAGES, max_tokens=8, temperature=0)
    ids = expected_ids(path, TEMPLATE)
    hf = oracle(path)
    with torch.no_grad():
        new = hf.model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=8)[0, len(ids):].tolist()
    assert completion.usage.prompt_tokens == len(ids)
    assert completion.choices[0].message.content == hf.tokenizer.decode(new, skip_special_tokens=True)
    tokenized = requests.post(f"http://localhost:{port}/tokenize", json={"messages": MESSAGES}, timeout=60).json()
    assert tokenized["tokens"] == ids  # the router's tokenizer has the option's template too


# A template that reads a variable of its own (as Qwen3's reads enable_thinking) and opens the assistant's
# turn only when asked: vLLM's chat_template_kwargs, add_generation_prompt and continue_final_message
STYLED = ("{{ bos_token }}{% if style %}[{{ style }}] {% endif %}"
          "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }} | {% endfor %}"
          "{% if add_generation_prompt %}assistant:{% endif %}")
PREFILLED = MESSAGES + [{"role": "assistant", "content": "the sea"}]


def hf_ids(path, messages, **options):
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    return list(tokenizer.apply_chat_template(messages, chat_template=STYLED, tokenize=True, return_dict=False,
                                              **options))


def test_chat_template_options_render_as_transformers(deploy, checkpoint, oracle):
    path = checkpoint("gqa")
    client = deploy(path, deployment_name="styled", transports=["rest"], restful_api_port=free_port_block(1),
                    chat_template=STYLED)
    _, port = client.record.front_ends["rest"]
    api = openai.OpenAI(base_url=f"http://localhost:{port}/v1", api_key="unused", max_retries=0, timeout=120)
    hf = oracle(path)
    cases = [  # (messages, the request's extra fields, transformers' arguments for the same prompt)
        (MESSAGES, {"chat_template_kwargs": {"style": "terse"}}, dict(add_generation_prompt=True, style="terse")),
        (MESSAGES, {"add_generation_prompt": False}, dict(add_generation_prompt=False)),
        (PREFILLED, {"add_generation_prompt": False, "continue_final_message": True},
         dict(add_generation_prompt=False, continue_final_message=True)),
    ]
    for messages, extra, hf_options in cases:
        ids = hf_ids(path, messages, **hf_options)
        with torch.no_grad():
            new = hf.model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=6)[0, len(ids):].tolist()
        completion = api.chat.completions.create(model="styled", messages=messages, max_tokens=6, temperature=0,
                                                 extra_body=extra)
        assert completion.usage.prompt_tokens == len(ids), extra
        assert completion.choices[0].message.content == hf.tokenizer.decode(new, skip_special_tokens=True), extra
        tokenized = requests.post(f"http://localhost:{port}/tokenize", timeout=60,
                                  json={"messages": messages, **extra}).json()
        assert tokenized["tokens"] == ids, extra
    # the variable really reaches the template: the styled prompt is longer than the plain one
    assert len(hf_ids(path, MESSAGES, add_generation_prompt=True, style="terse")) > len(
        hf_ids(path, MESSAGES, add_generation_prompt=True))


BAD_OPTIONS = [
    ({"continue_final_message": True}, "continue_final_message"),  # with add_generation_prompt's default true
    ({"add_generation_prompt": "yes"}, "add_generation_prompt"),
    ({"chat_template_kwargs": {"tokenize": False}}, "chat_template_kwargs"),
    ({"chat_template_kwargs": ["style"]}, "chat_template_kwargs"),
]


def test_bad_chat_template_options_are_400s_naming_the_field(deploy, checkpoint):
    client = deploy(checkpoint("gqa"), deployment_name="styled-bad", transports=["rest"],
                    restful_api_port=free_port_block(1), chat_template=STYLED)
    _, port = client.record.front_ends["rest"]
    for extra, field in BAD_OPTIONS:
        for route, size in (("/v1/chat/completions", {"max_tokens": 2}), ("/tokenize", {})):
            answer = requests.post(f"http://localhost:{port}{route}", timeout=60,
                                   json={"model": "styled-bad", "messages": PREFILLED, **size, **extra})
            assert answer.status_code == 400, (extra, route, answer.text)
            error = answer.json()["error"]
            assert error["param"] == field and field in error["message"], (extra, route, error)
    # and the deployment keeps serving
    good = requests.post(f"http://localhost:{port}/v1/chat/completions", timeout=120,
                         json={"model": "styled-bad", "messages": MESSAGES, "max_tokens": 2})
    assert good.status_code == 200, good.text
