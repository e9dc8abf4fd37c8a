"""Waiting for a non-streamed answer while watching the client: one that disconnects cancels its request,
so its sequences stop at the engine's next step (as vLLM does; a stream is cancelled when a write fails)."""
from __future__ import annotations

from flask import request

from mii_core.response import Response
from mii_core.serving.backend import ResponseStream
from mii_server_rest.errors import HttpError

DISCONNECT_POLL_SECONDS = 0.25


def result_while_connected(stream: ResponseStream) -> list[Response]:
    """The request's responses, or HttpError("cancelled") once the client is gone (the stream cancelled).
    Waitress tells whether the client left (``waitress.client_disconnected``, with request lookahead on)."""
    client_gone = request.environ.get("waitress.client_disconnected")
    if client_gone is None:
        return stream.result()
    for _ in stream.events(poll_interval=DISCONNECT_POLL_SECONDS):
        if client_gone():
            stream.cancel()
            raise HttpError("cancelled", "the client disconnected before the answer was ready")
    return stream.responses
