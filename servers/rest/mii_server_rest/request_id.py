"""``X-Request-Id`` as vLLM's server answers it: the client's id echoed on the response (any route, errors
too), or a fresh one when the request carried none, so that a client can match logs and answers. An id that
is not printable ASCII of at most MAX_ID_LENGTH characters is refused (400), not replaced silently."""
from __future__ import annotations

import uuid

from flask import Flask, Response, g, request

from mii_server_rest.errors import HttpError

HEADER = "X-Request-Id"
MAX_ID_LENGTH = 256


def register_request_ids(app: Flask) -> None:
    @app.before_request
    def read_request_id() -> None:
        given = request.headers.get(HEADER)
        g.request_id = uuid.uuid4().hex  # set first: the refusal below is answered with an id too
        if given is None:
            return
        if not given or len(given) > MAX_ID_LENGTH or not given.isascii() or not given.isprintable():
            raise HttpError("invalid", f"the {HEADER} header must be 1 to {MAX_ID_LENGTH} printable ASCII "
                            f"characters, got {len(given)} characters", "bad_request_id")
        g.request_id = given

    @app.after_request
    def echo_request_id(response: Response) -> Response:
        response.headers[HEADER] = g.get("request_id") or uuid.uuid4().hex
        return response
