"""OpenAI's ``tools`` and ``tool_choice`` on chat. ``required`` and a named function are enforced by structured
output (a JSON schema of the call(s), as vLLM does: ``required`` → an array of ``{"name", "parameters"}``, a
named function → its arguments); ``auto`` reads the calls from the output with the deployment's
``tool_call_parser``; ``none`` leaves the output as text. The tools reach the chat template in every case."""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Optional

from mii_server_rest.errors import HttpError
from mii_server_rest.tool_parsers import LLAMA_PYTHON_TAG, HERMES_START, parse_calls

CHOICES = ("none", "auto", "required")


def bad(message: str, param: str) -> HttpError:
    return HttpError("invalid", message, f"invalid_{param}", param)


@dataclass(frozen=True)
class ToolRequest:
    tools: list[dict[str, Any]]
    choice: str  # "none", "auto", "required" or "named"
    named: Optional[str]  # the function's name when choice is "named"
    parser: Optional[str]  # the deployment's tool_call_parser
    parallel: bool

    def guide(self) -> dict[str, Any]:
        """The engine options that force the call(s) (empty for auto and none)."""
        if self.choice == "named":
            return {"guided_json": self._parameters(self.named)}
        if self.choice != "required":
            return {}
        calls = {"anyOf": [{"type": "object", "required": ["name", "parameters"],
                            "properties": {"name": {"type": "string", "enum": [name]},
                                           "parameters": self._parameters(name)}} for name in self.names]}
        return {"guided_json": {"type": "array", "items": calls, "minItems": 1, **({} if self.parallel else
                                                                                   {"maxItems": 1})}}

    @property
    def names(self) -> list[str]:
        return [tool["function"]["name"] for tool in self.tools]

    def _parameters(self, name: str) -> dict[str, Any]:
        function = next(tool["function"] for tool in self.tools if tool["function"]["name"] == name)
        return function.get("parameters") or {"type": "object", "properties": {}}

    def calls(self, text: str) -> tuple[Optional[str], list[dict[str, Any]]]:
        """(the message's content, its tool_calls in OpenAI's shape) read from a finished output."""
        if self.choice == "named":
            found = [(self.named, text)]
            content = None
        elif self.choice == "required":
            try:
                found = [(call["name"], json.dumps(call["parameters"])) for call in json.loads(text)]
                content = None
            except (ValueError, TypeError, KeyError):
                return text, []
        elif self.choice == "auto" and self.parser is not None:
            content, found = parse_calls(self.parser, text)
        else:
            return text, []
        return content, [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                          "function": {"name": name, "arguments": arguments}} for name, arguments in found]

    def holds_back(self, text: str) -> int:
        """Where streamed content must stop for now: text from there on may be (the start of) a call."""
        if self.choice in ("named", "required"):
            return 0
        if self.choice != "auto" or self.parser is None:
            return len(text)
        if self.parser == "llama3_json":
            head = text.lstrip()
            could_be_call = head.startswith(("{", LLAMA_PYTHON_TAG)) or LLAMA_PYTHON_TAG.startswith(head)
            return 0 if could_be_call else len(text)
        start = text.find(HERMES_START)
        if start >= 0:
            return start
        partial = next((k for k in range(len(HERMES_START) - 1, 0, -1) if text.endswith(HERMES_START[:k])), 0)
        return len(text) - partial


def tool_request(body: dict[str, Any], parser: Optional[str]) -> Optional[ToolRequest]:
    """The request's tools and tool_choice checked (None without tools)."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    if not tools:
        if choice not in (None, "none"):
            raise bad("tool_choice needs tools", "tool_choice")
        return None
    tools = _checked_tools(tools)
    named = _named(choice, tools)
    kind = "named" if named else (choice or "auto")
    if kind == "auto" and parser is None:
        raise bad("tool_choice auto needs the deployment's tool_call_parser option (hermes or llama3_json, as "
                  "vLLM's --tool-call-parser) to read the calls; give tool_choice required, none or a function",
                  "tool_choice")
    parallel = body.get("parallel_tool_calls", True)
    if not isinstance(parallel, bool):
        raise bad("parallel_tool_calls must be true or false", "parallel_tool_calls")
    return ToolRequest(tools, kind, named, parser, parallel)


def _checked_tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise bad("tools must be a list of {\"type\": \"function\", \"function\": {...}} objects", "tools")
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if (not isinstance(tool, dict) or tool.get("type", "function") != "function" or not isinstance(function, dict)
                or not isinstance(function.get("name"), str) or not function["name"]
                or not isinstance(function.get("parameters", {}), dict)):
            raise bad(f"tools[{i}] must be {{\"type\": \"function\", \"function\": {{\"name\": ..., "
                      "\"description\": ..., \"parameters\": {a JSON schema}}}}", "tools")
    names = [tool["function"]["name"] for tool in tools]
    if len(set(names)) != len(names):
        raise bad("tools must have distinct function names", "tools")
    return tools


def _named(choice: Any, tools: list[dict[str, Any]]) -> Optional[str]:
    if choice is None or choice in CHOICES:
        return None
    name = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    if not (isinstance(choice, dict) and choice.get("type") == "function" and isinstance(name, str)):
        raise bad("tool_choice must be none, auto, required or {\"type\": \"function\", \"function\": "
                  "{\"name\": ...}}", "tool_choice")
    if name not in [tool["function"]["name"] for tool in tools]:
        raise bad(f"tool_choice names the function {name!r:.60}, which is not among the tools", "tool_choice")
    return name


def template_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Assistant tool_calls with their arguments as objects, as chat templates render them (vLLM does the same)."""
    for message in messages:
        for call in message.get("tool_calls") or []:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                try:
                    function["arguments"] = json.loads(function["arguments"])
                except ValueError:
                    pass  # a template that wants the text gets the text
    return messages
