"""Structured output and tools through the official openai client and LangChain against a real deployment
of the tiny random Llama (sampled at temperature 1 unless said otherwise): outputs validate against their
schemas (jsonschema), regexes and choices match (re), tool calls are read from the output."""
from __future__ import annotations

import json
import re

import jsonschema
import openai
import pytest

PERSON = {"type": "object", "properties": {"age": {"type": "integer", "minimum": 0, "maximum": 120},
                                           "pet": {"enum": ["cat", "dog"]}}, "required": ["age", "pet"]}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "the weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]},
                                                    "days": {"type": "integer", "minimum": 1, "maximum": 7}},
                   "required": ["city", "days"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"type": "string", "maxLength": 3}}, "required": ["zone"]}}}
HERMES_CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Rome", "days": 2}}</tool_call>'
USER = [{"role": "user", "content": "the weather in the city"}]


@pytest.fixture(scope="module")
def api(tools_server):
    return openai.OpenAI(base_url=tools_server, api_key="unused", max_retries=0, timeout=120)


def chat(api, **kwargs):
    return api.chat.completions.create(model="tools", messages=kwargs.pop("messages", USER), temperature=1.0,
                                       max_tokens=kwargs.pop("max_tokens", 64), **kwargs)


def test_response_format_json_schema_validates(api):
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    for choice in chat(api, response_format=fmt, n=3).choices:
        assert choice.finish_reason == "stop"
        jsonschema.validate(json.loads(choice.message.content), PERSON)


def test_response_format_json_schema_streamed_validates(api):
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    text = "".join(c.choices[0].delta.content or "" for c in chat(api, response_format=fmt, stream=True) if c.choices)
    jsonschema.validate(json.loads(text), PERSON)


def test_response_format_json_object_is_an_object(api, tools_checkpoint):
    from transformers import AutoTokenizer

    close = AutoTokenizer.from_pretrained(tools_checkpoint).convert_tokens_to_ids("}")
    # the bias makes "}" the model's favourite: the grammar still opens the object first, then lets it close
    reply = chat(api, response_format={"type": "json_object"}, logit_bias={str(close): 100})
    assert json.loads(reply.choices[0].message.content) == {}


def test_vllm_guided_fields_from_extra_body(api):
    completion = api.completions.create(model="tools", prompt="The quick brown fox", max_tokens=20, temperature=1.0,
                                        n=4, extra_body={"guided_regex": r"[a-z]{3}-[0-9]{2}"})
    assert all(re.fullmatch(r"[a-z]{3}-[0-9]{2}", c.text) for c in completion.choices)
    reply = chat(api, n=4, extra_body={"guided_choice": ["sunny", "rain"]})
    assert {c.message.content for c in reply.choices} <= {"sunny", "rain"}


@pytest.mark.parametrize("body, param", [
    ({"guided_regex": "(ab"}, "guided_regex"),
    ({"guided_json": {"type": "nonsense"}}, "guided_json"),
    ({"guided_grammar": "root ::= x"}, "guided_grammar"),
    ({"response_format": {"type": "xml"}}, "response_format"),
    # a schema the grammar library refuses, given through response_format: the error names response_format
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}},
     "response_format"),
    ({"response_format": {"type": "json_object"}, "guided_regex": "a"}, "response_format"),
    ({"tools": [{"type": "function", "function": {}}]}, "tools"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
])
def test_bad_guides_and_tools_are_400s_naming_the_field(api, body, param):
    with pytest.raises(openai.BadRequestError) as caught:
        chat(api, extra_body=body)
    assert param in caught.value.message and caught.value.body["param"] == param, caught.value.body


def test_tool_choice_required_calls_validate(api):
    # one call: a random model would otherwise keep adding calls until max_tokens
    reply = chat(api, tools=[WEATHER, TIME], tool_choice="required", parallel_tool_calls=False, max_tokens=96)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, TIME)}
    for call in choice.message.tool_calls:
        jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])


def test_a_named_tool_choice_calls_that_function(api):
    named = {"type": "function", "function": {"name": "get_weather"}}
    for stream in (False, True):
        if stream:
            deltas = [d for c in chat(api, tools=[WEATHER, TIME], tool_choice=named, stream=True) if c.choices
                      for d in c.choices[0].delta.tool_calls or []]
            [call] = [d.function for d in deltas]
        else:
            [tool_call] = chat(api, tools=[WEATHER, TIME], tool_choice=named).choices[0].message.tool_calls
            call = tool_call.function
        assert call.name == "get_weather"
        jsonschema.validate(json.loads(call.arguments), WEATHER["function"]["parameters"])


def test_auto_reads_a_hermes_call_from_the_output(api):
    script = {"guided_regex": re.escape(HERMES_CALL)}  # makes the model say exactly a hermes tool call
    choice = chat(api, tools=[WEATHER], tool_choice="auto", max_tokens=80, extra_body=script).choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Rome", "days": 2}
    chunks = list(chat(api, tools=[WEATHER], max_tokens=80, extra_body=script, stream=True))
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert [(d.function.name, json.loads(d.function.arguments)) for d in deltas] == [
        ("get_weather", {"city": "Rome", "days": 2})]
    assert not "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_auto_without_a_call_is_plain_content(api):
    choice = chat(api, tools=[WEATHER], extra_body={"guided_choice": ["no call today"]}).choices[0]
    assert (choice.message.content, choice.message.tool_calls, choice.finish_reason) == ("no call today", None, "stop")


def test_tools_and_tool_turns_reach_the_chat_template(api, tools_checkpoint):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tools_checkpoint)
    messages = USER + [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city": "Rome", "days": 2}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    reply = chat(api, messages=messages, tools=[WEATHER], tool_choice="none", max_tokens=2)

    def hf_ids(**tools):
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, **tools)
        return ids["input_ids"] if hasattr(ids, "keys") else ids

    assert reply.usage.prompt_tokens == len(hf_ids(tools=[WEATHER])) > len(hf_ids())


def test_guides_travel_through_mii_and_grpc(tools_server):
    """/mii takes the engine's option names; gRPC carries them in query_kwargs (a schema as a map)."""
    import requests
    from mii_server_grpc.convert import make_request, to_generate_request

    base = tools_server.removesuffix("/v1")
    answer = requests.post(f"{base}/mii/tools", json={"prompts": ["The quick", "A small"], "max_new_tokens": 40,
                                                      "guided_json": PERSON, "top_p": 1.0}).json()
    for item in answer:
        jsonschema.validate(json.loads(item["generated_text"]), PERSON)
    assert to_generate_request(make_request(["x"], guided_json=PERSON), False).options == {"guided_json": PERSON}
