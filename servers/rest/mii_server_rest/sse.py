"""Server-Sent Events: each event one ``data:`` line of JSON; a client that goes away cancels its request."""
from __future__ import annotations

import json
from typing import Any, Callable, Iterable, Iterator

from flask import Response

from mii_core.serving.backend import Backend, GenerateRequest, ResponseStream
from mii_core.serving.errors import error_kind
from mii_server_rest.errors import TYPE_BY_KIND

KEEPALIVE_SECONDS = 5.0  # an SSE comment this often: a client that left is noticed even when idle
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def event(data: Any) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


def start_stream(backend: Backend, generate: GenerateRequest) -> tuple[ResponseStream, Any, Iterator[Any]]:
    """Submits and waits for the first event, so errors found before the request runs (bad input,
    a full queue) become a status code rather than an event inside a 200 stream."""
    stream = backend.submit(generate)
    events = stream.events(poll_interval=KEEPALIVE_SECONDS)
    try:
        first = next(events)
    except BaseException:
        stream.cancel()
        raise
    return stream, first, events


def sse_response(body: Iterator[bytes]) -> Response:
    return Response(body, mimetype="text/event-stream", headers=SSE_HEADERS)


def sse_stream(stream: ResponseStream, first: Any, rest: Iterator[Any],
               render: Callable[[Any], Iterable[Any]], closing: Callable[[], Iterable[Any]]) -> Iterator[bytes]:
    """``render(event)`` → payloads for one backend event; ``closing()`` → payloads after the last.

    waitress closes this generator when a write to a gone client fails; ``finally`` then cancels the
    request, so the engine frees its KV blocks at the next step.
    """
    try:
        for item in _chain(first, rest):
            if item is None:
                yield b": keep-alive\n\n"
                continue
            for payload in render(item):
                yield event(payload)
        for payload in closing():
            yield event(payload)
        yield event("[DONE]")
    except Exception as exc:  # the stream already said 200: the error goes in the stream
        kind = error_kind(exc)
        yield event({"error": {"message": str(exc), "type": TYPE_BY_KIND.get(kind, "server_error"), "code": kind}})
    finally:
        if stream.responses is None:
            stream.cancel()
            rest.close()  # ends the backend's generator now, which closes its link to the replica


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest
