"""LiteLLM's ``hosted_vllm/`` provider (``litellm.completion`` with ``api_base``) and LangChain's
``ChatOpenAI`` against a deployment, as their users call them: plain chat, OpenAI's penalties and vLLM's
``repetition_penalty`` (in ``extra_body``), streaming. Greedy answers equal HF transformers' greedy
decoding of the chat template's tokens, with HF's logits processors where penalties apply."""

from __future__ import annotations

import os

import pytest
from transformers import LogitsProcessorList

from support.clients import require_client
from test_openai_sampling_fields import hf_new_ids, text  # HF greedy over token ids, its text
from test_penalties_generation import OpenAIPenalties  # the PyTorch reference of OpenAI's formula

NEW = 12
# LiteLLM's streaming types warn, from pydantic, about their own TypedDicts: nothing of ours
pytestmark = pytest.mark.filterwarnings("ignore:Item .* is using the `ReadOnly` qualifier:UserWarning")


def chat_ids(hf, content: str) -> list[int]:
    ids = hf.tokenizer.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                           tokenize=True)
    return ids["input_ids"] if hasattr(ids, "keys") else ids


@pytest.fixture(scope="module")
def litellm():
    # LiteLLM fetches its model price list from GitHub when imported, unless told to use its bundled copy
    old = os.environ.get("LITELLM_LOCAL_MODEL_COST_MAP")
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    yield require_client("litellm", "litellm")
    if old is None:
        os.environ.pop("LITELLM_LOCAL_MODEL_COST_MAP", None)
    else:
        os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = old


@pytest.fixture(scope="module")
def chat_openai(api):
    require_client("langchain_openai", "langchain-openai")
    from langchain_openai import ChatOpenAI

    _, _, url = api
    return ChatOpenAI(model="demo", base_url=f"{url}/v1", api_key="unused", temperature=0, max_tokens=NEW,
                      max_retries=0)


def litellm_chat(litellm, url: str, content: str, **options):
    return litellm.completion(model="hosted_vllm/demo", api_base=f"{url}/v1", max_tokens=NEW, temperature=0,
                              messages=[{"role": "user", "content": content}], **options)


def test_litellm_plain_chat_is_hfs_greedy_answer(api, litellm):
    _, hf, url = api
    expected = hf.greedy_ids(tuple(chat_ids(hf, "Say something about rivers.")), NEW)
    answer = litellm_chat(litellm, url, "Say something about rivers.")
    choice = answer.choices[0]
    assert (choice.message.content, choice.finish_reason) == (expected.text, expected.finish_reason)
    assert answer.usage.completion_tokens == expected.generated_length


def test_litellm_presence_and_frequency_penalties_equal_hf(api, litellm):
    _, hf, url = api
    ids = chat_ids(hf, "Tell me about the river")
    expected = hf_new_ids(hf, ids, max_new_tokens=NEW,
                          logits_processor=LogitsProcessorList([OpenAIPenalties(len(ids), 1.5, 0.5)]))
    assert expected != hf_new_ids(hf, ids, max_new_tokens=NEW), "fixture problem: the penalties must matter"
    answer = litellm_chat(litellm, url, "Tell me about the river", presence_penalty=1.5, frequency_penalty=0.5,
                          extra_body={"ignore_eos": True})
    assert answer.choices[0].message.content == text(hf, expected)


def test_litellm_repetition_penalty_in_extra_body_equals_hf(api, litellm):
    _, hf, url = api
    ids = chat_ids(hf, "the river bank")
    expected = hf_new_ids(hf, ids, max_new_tokens=NEW, repetition_penalty=1.3)
    assert expected != hf_new_ids(hf, ids, max_new_tokens=NEW), "fixture problem: the penalty must matter"
    answer = litellm_chat(litellm, url, "the river bank", extra_body={"repetition_penalty": 1.3, "ignore_eos": True})
    assert answer.choices[0].message.content == text(hf, expected)


def test_litellm_streams_the_same_answer(api, litellm):
    _, hf, url = api
    expected = hf.greedy_ids(tuple(chat_ids(hf, "Say something about rivers.")), NEW)
    chunks = litellm_chat(litellm, url, "Say something about rivers.", stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected.text


def test_langchain_chat_openai_invoke_is_hfs_greedy_answer(api, chat_openai):
    _, hf, _ = api
    expected = hf.greedy_ids(tuple(chat_ids(hf, "Tell me about the river")), NEW)
    message = chat_openai.invoke("Tell me about the river")
    assert message.content == expected.text
    assert message.response_metadata["finish_reason"] == expected.finish_reason
    assert message.usage_metadata["output_tokens"] == expected.generated_length


def test_langchain_chat_openai_streams_the_same_answer(api, chat_openai):
    _, hf, _ = api
    expected = hf.greedy_ids(tuple(chat_ids(hf, "Tell me about the river")), NEW)
    chunks = list(chat_openai.stream("Tell me about the river"))
    assert "".join(chunk.content for chunk in chunks) == expected.text
    assert len([c for c in chunks if c.content]) > 1  # streamed in pieces, not one answer
