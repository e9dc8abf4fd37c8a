"""Structured output on the OpenAI routes: OpenAI's ``response_format`` and vLLM's ``guided_*`` fields (the
openai client sends the latter from ``extra_body`` as top-level fields) as the engine's guided options,
which the engine compiles (a schema, regex or grammar it cannot compile is a 400 naming the option)."""
from __future__ import annotations

from typing import Any

from mii_server_rest.errors import HttpError, name_engine_option_as

GUIDED_FIELDS = ("guided_json", "guided_regex", "guided_choice", "guided_grammar")


def bad(message: str, param: str) -> HttpError:
    return HttpError("invalid", message, f"invalid_{param}", param)


def guided_options(body: dict[str, Any]) -> dict[str, Any]:
    """The engine options of the request's guide: at most one of response_format and the guided fields."""
    fields = {name: body[name] for name in GUIDED_FIELDS if body.get(name) is not None}
    from_format = response_format_options(body.get("response_format"))
    if from_format and fields:
        raise bad(f"response_format cannot be combined with {', '.join(fields)}; give one of them", "response_format")
    for option in from_format:  # the engine's errors about it then name the field the client sent
        name_engine_option_as(option, "response_format")
    return {**fields, **from_format}


def response_format_options(value: Any) -> dict[str, Any]:
    """OpenAI's ``{"type": "text" | "json_object" | "json_schema", "json_schema": {"name", "schema", "strict"}}``
    (a schema is always enforced, strict or not)."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not isinstance(value.get("type", "text"), str):
        raise bad("response_format must be an object such as {\"type\": \"json_object\"}", "response_format")
    kind = value.get("type", "text")
    if kind == "text":
        return {}
    if kind == "json_object":
        return {"guided_json_object": True}
    if kind != "json_schema":
        raise bad(f"response_format type must be text, json_object or json_schema, got {kind!r:.60}",
                  "response_format")
    spec = value.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
        raise bad("response_format json_schema must be an object {\"name\", \"schema\": {...}, \"strict\"}",
                  "response_format")
    return {"guided_json": spec.get("schema") or {"type": "object"}}
