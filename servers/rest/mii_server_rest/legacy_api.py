"""The REST routes of an MII Legacy deployment: ``POST /mii/<deployment>`` with the task's keys as JSON
(images as base64; options under ``kwargs``, or MII's ``{"request": {...}, "kwargs": {...}}``) →
``{"response": ..., "time_taken": ...}`` (image bytes as base64), and OpenAI's ``POST /v1/embeddings`` on a
feature-extraction deployment (each input a query of its own, so the replica's batcher batches them)."""
from __future__ import annotations

import array
import base64
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask import Flask, jsonify, request

from mii_core.serving.backend import Backend, TaskQuery
from mii_core.serving.transport import TransportSettings
from mii_server_rest.auth import needs_key
from mii_server_rest.body import json_body
from mii_server_rest.errors import HttpError
from mii_server_rest.waiting import result_while_connected

EMBEDDINGS_TASK = "feature-extraction"
EMBEDDING_FIELDS = {"input", "model", "encoding_format", "user", "dimensions"}
MAX_PARALLEL_INPUTS = 64  # queries of one /v1/embeddings call in flight at once (the batcher joins them)


def task_query_answer(backend: Backend, body: dict[str, Any]) -> Any:
    """``POST /mii/<deployment>`` on a legacy deployment: the task's answer, bytes as base64."""
    if isinstance(body.get("request"), dict):  # MII Legacy's REST body
        query, options = body["request"], body.get("kwargs", {})
    else:
        options = body.pop("kwargs", {})
        query = body
    if not isinstance(options, dict):
        raise HttpError("invalid", f"'kwargs' (the task's options) must be an object, got {options!r}"[:300],
                        param="kwargs")
    answer = result_while_connected(backend.submit(TaskQuery(query, options)))
    return jsonify(_json_ready(answer))


def _json_ready(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    return value


def register_embeddings_route(app: Flask, backend: Backend, settings: TransportSettings) -> None:
    @app.post("/v1/embeddings")
    @needs_key(settings)
    def embeddings() -> Any:
        if settings.task != EMBEDDINGS_TASK:
            raise HttpError("not_found", f"/v1/embeddings needs a {EMBEDDINGS_TASK} deployment; this one serves "
                            f"{settings.task or 'text generation'}", "embeddings_not_served")
        body = json_body(request, settings.max_request_bytes)
        inputs, as_base64 = _embedding_request(body)
        with ThreadPoolExecutor(min(len(inputs), MAX_PARALLEL_INPUTS), thread_name_prefix="embeddings") as pool:
            answers = list(pool.map(lambda item: _embed(backend, item), inputs))
        tokens = sum(answer["prompt_tokens"] for answer in answers)
        data = [{"object": "embedding", "index": i,
                 "embedding": _base64_floats(a["embedding"]) if as_base64 else a["embedding"]}
                for i, a in enumerate(answers)]
        return jsonify({"object": "list", "data": data, "model": body.get("model") or settings.model_name,
                        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def _embedding_request(body: dict[str, Any]) -> tuple[list[Any], bool]:
    """The inputs (texts or token id lists) and whether to answer in base64; bad fields are 400s naming them."""
    unknown = sorted(set(body) - EMBEDDING_FIELDS)
    if unknown:
        raise HttpError("invalid", f"unknown field(s) {unknown}; /v1/embeddings takes {sorted(EMBEDDING_FIELDS)}",
                        param=unknown[0])
    if "input" not in body:
        raise HttpError("invalid", "the body needs 'input': a string, a list of strings, a list of token ids or "
                        "a list of such lists", param="input")
    if body.get("dimensions") is not None:
        raise HttpError("invalid", "'dimensions' is not supported: embeddings have the model's size",
                        param="dimensions")
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise HttpError("invalid", f"encoding_format must be 'float' or 'base64', got {fmt!r}", param="encoding_format")
    return _inputs(body["input"]), fmt == "base64"


def _inputs(value: Any) -> list[Any]:
    is_ids = lambda v: isinstance(v, list) and bool(v) and all(type(t) is int for t in v)  # noqa: E731
    if isinstance(value, str) or is_ids(value):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) or is_ids(v) for v in value):
        return value
    raise HttpError("invalid", "'input' must be a non-empty string, a list of strings, a list of token ids or a "
                    f"list of such lists, got {value!r}"[:300], param="input")


def _embed(backend: Backend, item: Any) -> dict[str, Any]:
    stream = backend.submit(TaskQuery({"query": item}, {"return_token_count": True}, task=EMBEDDINGS_TASK))
    return stream.result()["response"]


def _base64_floats(values: list[float]) -> str:
    """OpenAI's base64 encoding: the float32 values' little-endian bytes."""
    packed = array.array("f", values)
    if sys.byteorder != "little":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")
