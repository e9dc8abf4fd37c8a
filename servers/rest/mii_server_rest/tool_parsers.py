"""Reading tool calls from a model's chat output under ``tool_choice: "auto"`` (vLLM's --tool-call-parser):
``hermes`` (``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, Hermes / Qwen templates) and
``llama3_json`` (the output is ``{"name": ..., "parameters": {...}}``, several joined by ";"). Each gives
(the text before the calls or None, [(name, arguments as JSON text)]); no call found: (the text, [])."""
from __future__ import annotations

import json
import re
from typing import Any, Callable, Optional

Calls = list[tuple[str, str]]
HERMES_START, HERMES_END = "<tool_call>", "</tool_call>"
_HERMES = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
LLAMA_PYTHON_TAG = "<|python_tag|>"


def parse_hermes(text: str) -> tuple[Optional[str], Calls]:
    start = text.find(HERMES_START)
    if start < 0:
        return text, []
    calls = [_call(json.loads(body)) for body in _HERMES.findall(text[start:])]
    return (text[:start].strip() or None), calls


def parse_llama3_json(text: str) -> tuple[Optional[str], Calls]:
    body = text.strip().removeprefix(LLAMA_PYTHON_TAG).strip()
    if not body.startswith("{"):
        return text, []
    decoder, calls, at = json.JSONDecoder(), [], 0
    while at < len(body):
        value, at = decoder.raw_decode(body, at)
        calls.append(_call(value))
        at = len(body) - len(body[at:].lstrip().removeprefix(";").lstrip())
    return None, calls


def _call(value: Any) -> tuple[str, str]:
    """A call object {"name", "arguments" | "parameters"}; a ValueError when it is not one."""
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise ValueError(f"not a tool call: {value!r:.100}")
    arguments = value.get("arguments", value.get("parameters", {}))
    return value["name"], arguments if isinstance(arguments, str) else json.dumps(arguments)


PARSERS: dict[str, Callable[[str], tuple[Optional[str], Calls]]] = {
    "hermes": parse_hermes, "llama3_json": parse_llama3_json}
# where a call may begin in streamed text: content before it is sent at once, from it on it is held back
CALL_STARTS = {"hermes": HERMES_START, "llama3_json": "{"}


def parse_calls(parser: str, text: str) -> tuple[Optional[str], Calls]:
    """The parser's reading, or (text, []) when the output is not well-formed calls (it is content then)."""
    try:
        return PARSERS[parser](text)
    except ValueError:
        return text, []
