"""The link's messages as msgpack with a checked shape: plain data only, never pickles.

Whoever can connect to a link (or plant a record pointing a client at its own listener) can at worst
send a malformed message: decoding builds nothing but dicts, lists, strings, numbers, bools and None,
and every message is checked against its shape before use; anything else raises ``MalformedMessage``.

Requests (caller → server) are dicts with ``op``: ``generate`` (``GenerateRequest`` fields, whose
values the engine checks as it checks any client's), ``query`` (a ``TaskQuery``: an MII Legacy task's
keys and options, checked by the task), ``health`` or ``terminate``. Replies (server → caller) are lists: ``["started"]``,
``["chunk", index, response]``, ``["done", payload]`` or ``["error", kind, message]``, where a
response is the dict of a ``Response``'s fields.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any

import msgpack

from mii_core.response import Response

MAX_MESSAGE_BYTES = 1 << 30  # one message (a reply of 100,000 responses fits); a bigger one is refused
OPS = ("generate", "query", "health", "terminate")
OPTIONAL_RESPONSE_FIELDS = ("logprobs", "token_ids", "prompt_logprobs", "prompt_token_ids")  # None, or lists
RESPONSE_FIELDS = {f.name: f.type for f in fields(Response) if f.name not in OPTIONAL_RESPONSE_FIELDS}
ALL_RESPONSE_FIELDS = tuple(f.name for f in fields(Response))
SHOWN_CHARS = 200  # how much of a bad value an error message quotes
BIG_INT = 1  # extension code: an integer beyond msgpack's 64 bits, as decimal text, so the engine can
# refuse it by name ("top_k ... got 10**30") rather than the link failing to carry it
MAX_BIG_INT_DIGITS = 1000


class MalformedMessage(ValueError):
    """A message that is not msgpack or not of the link's shapes (a forged or broken peer)."""


def encode(message: Any) -> bytes:
    """Plain data (dicts, lists, tuples, str, int, float, bool, None) as msgpack; TypeError otherwise."""
    return msgpack.packb(message, use_bin_type=True, default=_encode_other)


def decode(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, ext_hook=_decode_extension)
    except MalformedMessage:
        raise
    except Exception as exc:  # msgpack's errors: ExtraData, FormatError, StackError, ValueError, ...
        raise MalformedMessage(f"not a msgpack message: {type(exc).__name__}: {_short(exc)}") from None


def _encode_other(value: Any) -> Any:
    if isinstance(value, int) and len(str(abs(value))) <= MAX_BIG_INT_DIGITS:
        return msgpack.ExtType(BIG_INT, str(value).encode("ascii"))
    if isinstance(value, int):
        raise TypeError(f"an integer of {len(str(abs(value)))} digits is too large to send over the link")
    raise TypeError(f"cannot send a {type(value).__name__} over the link: only plain data "
                    "(dict, list, str, int, float, bool, None)")


def _decode_extension(code: int, data: bytes) -> Any:
    if code == BIG_INT and 0 < len(data) <= MAX_BIG_INT_DIGITS + 1 and data.lstrip(b"-").isdigit():
        return int(data)
    raise MalformedMessage(f"msgpack extension type {code} is not part of the link's messages")


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + f"... ({len(text)} characters)"


# ---- requests ----

def check_request(message: Any) -> dict[str, Any]:
    """A request dict of a known op (its prompts and options are the engine's to check, as from any client)."""
    if not isinstance(message, dict) or message.get("op") not in OPS:
        op = message.get("op") if isinstance(message, dict) else None
        raise MalformedMessage(f"unknown link operation {_short(op)!r}; expected one of {', '.join(OPS)}")
    if message["op"] == "query":
        _check_task_query(message)
    return message


def _check_task_query(message: dict[str, Any]) -> None:
    for name in ("query", "options"):
        value = message.get(name)
        if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
            raise MalformedMessage(f"a task query's '{name}' must be a dict with string keys, got {_short(value)}")
    if not (message.get("task") is None or isinstance(message.get("task"), str)):
        raise MalformedMessage(f"a task query's 'task' must be a string or None, got {_short(message.get('task'))}")


# ---- replies ----

def response_to_wire(response: Response) -> dict[str, Any]:
    # A shallow map of the fields (their values are plain data already): dataclasses.asdict deep-copies,
    # 12 µs a streamed token in the replica's process, beside the engine (benchmarks/RESULTS.md, W5 profile).
    return {name: getattr(response, name) for name in ALL_RESPONSE_FIELDS}


def response_from_wire(data: Any) -> Response:
    """A Response from exactly its fields, each of its type (bool is not an int here)."""
    allowed = set(RESPONSE_FIELDS) | set(OPTIONAL_RESPONSE_FIELDS)
    if not isinstance(data, dict) or not set(RESPONSE_FIELDS) <= set(data) <= allowed:
        raise MalformedMessage(f"a response must have the fields {sorted(RESPONSE_FIELDS)} (and optionally "
                               f"{', '.join(OPTIONAL_RESPONSE_FIELDS)}), got {_short(data)}")
    for name, kind in RESPONSE_FIELDS.items():
        value = data[name]
        wanted = int if kind in (int, "int") else str
        if type(value) is not wanted:
            raise MalformedMessage(f"response field '{name}' must be {wanted.__name__}, got {_short(value)!r}")
    _check_optional(data)
    return Response(**data)


def _check_optional(data: dict[str, Any]) -> None:
    """The optional fields: token id lists, and logprob entry lists (a prompt's starts with None)."""
    for name in ("token_ids", "prompt_token_ids"):
        ids = data.get(name)
        if ids is not None and not (isinstance(ids, list) and all(type(t) is int for t in ids)):
            raise MalformedMessage(f"response field '{name}' must be a list of ints or None, got {_short(ids)!r}")
    for name, first_may_be_none in (("logprobs", False), ("prompt_logprobs", True)):
        entries = data.get(name)
        if entries is None:
            continue
        rest = entries[1:] if first_may_be_none and isinstance(entries, list) and entries[:1] == [None] else entries
        if not (isinstance(entries, list) and all(isinstance(e, dict) for e in rest)):
            raise MalformedMessage(f"response field '{name}' must be a list of dicts or None, got {_short(entries)!r}")


def check_reply(message: Any) -> list[Any]:
    """A reply list of one of the four shapes (the done payload is checked by whoever reads it)."""
    if not isinstance(message, list) or not message or not isinstance(message[0], str):
        raise MalformedMessage(f"a link reply must be a list starting with its kind, got {_short(message)}")
    kind, size = message[0], len(message)
    if kind == "started" and size == 1 or kind == "done" and size == 2:
        return message
    if kind == "chunk" and size == 3 and type(message[1]) is int and message[1] >= 0:
        return message
    if kind == "error" and size == 3 and all(isinstance(part, str) for part in message[1:]):
        return message
    raise MalformedMessage(f"malformed link reply {_short(message)}")


def responses_from_wire(payload: Any) -> list[Response]:
    if not isinstance(payload, list):
        raise MalformedMessage(f"a done reply must carry a list of responses, got {_short(payload)}")
    return [response_from_wire(item) for item in payload]


def task_answer_from_wire(payload: Any) -> dict[str, Any]:
    """A task query's answer: ``{"response": plain data, "time_taken": seconds}``."""
    if (not isinstance(payload, dict) or set(payload) != {"response", "time_taken"}
            or type(payload["time_taken"]) is not float):
        raise MalformedMessage(f"a task answer must be {{'response': ..., 'time_taken': float}}, got {_short(payload)}")
    return payload


def health_from_wire(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict) or not isinstance(payload.get("status"), str):
        raise MalformedMessage(f"a health reply must be a dict with a 'status', got {_short(payload)}")
    return payload
