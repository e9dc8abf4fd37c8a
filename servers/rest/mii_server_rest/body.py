"""Reading a request body: size limit, UTF-8, JSON object; each failure a 400 that says what is wrong."""
from __future__ import annotations

import json
from typing import Any

from flask import Request

from mii_server_rest.errors import HttpError

MAX_DEPTH = 64  # no request of ours nests deeper than a few levels; deeper ones only recurse the server


def json_body(request: Request, limit: int) -> dict[str, Any]:
    length = request.content_length
    if length is not None and length > limit:
        raise HttpError("invalid", f"the request body is {length} bytes; the limit is {limit} "
                        "(max_request_bytes)", "body_too_large")
    raw = request.stream.read(limit + 1)
    if len(raw) > limit:
        raise HttpError("invalid", f"the request body is over {limit} bytes (max_request_bytes)", "body_too_large")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HttpError("invalid", f"the request body is not UTF-8 text (byte {exc.start}: "
                        f"{raw[exc.start:exc.start + 1]!r}); send JSON encoded as UTF-8", "bad_encoding") from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HttpError("invalid", f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} "
                        f"column {exc.colno}", "bad_json") from None
    except RecursionError:
        body = None  # nested beyond what the decoder can take: deeper than MAX_DEPTH too
    if body is None or _depth_over(body, MAX_DEPTH):
        raise HttpError("invalid", f"the request body nests JSON deeper than {MAX_DEPTH} levels", "bad_json")
    if not isinstance(body, dict):
        raise HttpError("invalid", f"the request body must be a JSON object, got {type(body).__name__}", "bad_json")
    return body


def _depth_over(value: Any, limit: int) -> bool:
    """True when lists/objects nest more than ``limit`` levels (walked level by level, not recursively)."""
    level = [value]
    for _ in range(limit + 1):
        containers = [item for item in level if isinstance(item, (list, dict))]
        if not containers:
            return False
        level = [child for item in containers for child in (item.values() if isinstance(item, dict) else item)]
    return True  # containers found at depth limit + 1
