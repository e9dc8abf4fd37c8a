"""The tool-call parsers on outputs written by hand in each model family's format (as vLLM's tests do)."""
from __future__ import annotations

import json

from mii_server_rest.tool_parsers import parse_calls
from mii_server_rest.tools import ToolRequest

TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def test_hermes_reads_each_call_and_the_text_before():
    text = 'Let me look. <tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call><tool_call>{"name": "g", ' \
           '"arguments": {}}</tool_call>'
    assert parse_calls("hermes", text) == ("Let me look.", [("f", '{"a": 1}'), ("g", "{}")])


def test_hermes_without_a_call_or_with_broken_json_is_content():
    assert parse_calls("hermes", "just text") == ("just text", [])
    assert parse_calls("hermes", "<tool_call>{oops</tool_call>") == ("<tool_call>{oops</tool_call>", [])


def test_llama3_json_reads_one_or_several_calls():
    assert parse_calls("llama3_json", '{"name": "f", "parameters": {"a": "x"}}') == (None, [("f", '{"a": "x"}')])
    text = '<|python_tag|>{"name": "f", "parameters": {}}; {"name": "g", "arguments": {"b": 2}}'
    assert parse_calls("llama3_json", text) == (None, [("f", "{}"), ("g", '{"b": 2}')])
    assert parse_calls("llama3_json", "The answer is 4.") == ("The answer is 4.", [])


def test_streamed_content_is_held_back_where_a_hermes_call_may_begin():
    auto = ToolRequest([TOOL], "auto", None, "hermes", True)
    assert auto.holds_back("Hello <tool") == len("Hello ")
    assert auto.holds_back("Hello <tool_call>{") == len("Hello ")
    assert auto.holds_back("Hello there") == len("Hello there")


def test_required_is_an_array_of_calls_of_the_given_functions():
    guide = ToolRequest([TOOL], "required", None, None, False).guide()["guided_json"]
    assert guide["minItems"] == 1 and guide["maxItems"] == 1
    assert guide["items"]["anyOf"][0]["properties"]["name"] == {"type": "string", "enum": ["f"]}
    content, [call] = ToolRequest([TOOL], "required", None, None, True).calls(
        json.dumps([{"name": "f", "parameters": {"a": 1}}]))
    assert content is None and call["function"] == {"name": "f", "arguments": '{"a": 1}'}
