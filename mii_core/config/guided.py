"""vLLM's guided-decoding options (``guided_json``, ``guided_regex``, ``guided_choice``, ``guided_grammar``,
``guided_json_object``): their shapes are checked here; whether a schema, regex or grammar compiles is the
grammar library's to say (:mod:`mii_core.sampling.grammar`), when the request is admitted."""
from __future__ import annotations

import json
from typing import Any, Optional

GUIDED_FIELDS = ("guided_json", "guided_regex", "guided_choice", "guided_grammar", "guided_json_object")
# A schema, regex or grammar is compiled on the request's thread; bounded so one request cannot take minutes.
GUIDED_TEXT_LIMIT = 64 * 1024
GUIDED_CHOICE_LIMIT = 1024


def schema_text(value: Any) -> Optional[str]:
    """``guided_json`` as JSON text: a schema object, or a string holding one (vLLM takes both)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"guided_json must be a JSON schema (an object, or a string holding one); the "
                             f"string does not parse as JSON: {exc}") from None
    if not isinstance(value, (dict, bool)):
        raise ValueError(f"guided_json must be a JSON schema (an object), got {type(value).__name__}")
    text = json.dumps(value)
    _check_size("guided_json", text)
    return text


def pattern_text(name: str, value: Any) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r:.100}")
    _check_size(name, value)
    return value


def choices(value: Any) -> Optional[list[str]]:
    if value is None:
        return None
    if (not isinstance(value, (list, tuple)) or not value or len(value) > GUIDED_CHOICE_LIMIT
            or any(not isinstance(c, str) or not c for c in value)):
        raise ValueError(f"guided_choice must be a list of 1 to {GUIDED_CHOICE_LIMIT} non-empty strings, "
                         f"got {value!r:.200}")
    _check_size("guided_choice", json.dumps(list(value)))
    return list(value)


def check_one_guide(given: list[str]) -> None:
    if len(given) > 1:
        raise ValueError(f"give at most one of {', '.join(GUIDED_FIELDS)}; got {', '.join(given)}")


def _check_size(name: str, text: str) -> None:
    if len(text) > GUIDED_TEXT_LIMIT:
        raise ValueError(f"{name} holds {len(text)} characters; at most {GUIDED_TEXT_LIMIT} are accepted")
