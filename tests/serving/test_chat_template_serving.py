"""A deployment of a checkpoint that has no chat template, given one with the ``chat_template`` model option:
OpenAI chat works through the real server and equals HF greedy on the ids transformers renders with that
template. (The refusal without one, naming the option, is checked in tests/test_chat_template_option.py.)"""
import openai
import requests
import torch

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
