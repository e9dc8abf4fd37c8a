"""Refusals decided from a request's headers, before waitress reads (and spools) its body.

Waitress reads a whole body before the app runs, so the app alone cannot keep an unauthenticated
client from sending 60 MiB. Here the request parser, once the headers are in, refuses a request
that carries a body without the deployment's key (401) or declares one over ``max_request_bytes``
(400 ``body_too_large``, as the app answers), and headers that take longer than the header timeout (408); the connection is closed without
reading the body. Every waitress error is answered with OpenAI's JSON error shape.
"""
from __future__ import annotations

import hmac
import json
import time
from typing import Optional

from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.utilities import Error

from mii_server_rest.errors import TYPE_BY_KIND

REASONS = {400: "Bad Request", 401: "Unauthorized", 408: "Request Timeout", 413: "Content Too Large",
           431: "Request Header Fields Too Large", 501: "Not Implemented"}
KEY_MESSAGE = "this deployment needs its API key: send the header 'Authorization: Bearer <api_key>'"


def key_matches(authorization: str, api_key: str) -> bool:
    """True when an ``Authorization`` header carries ``Bearer <api_key>`` (compared in constant time)."""
    token = authorization[7:] if authorization.lower().startswith("bearer ") else ""
    return hmac.compare_digest(token.encode(), api_key.encode())


class JsonError(Error):
    """A refusal written by waitress itself, in the app's JSON error shape."""

    def __init__(self, status: int, kind: str, message: str, code: str) -> None:
        super().__init__(message)
        self.code, self.reason = status, REASONS.get(status, "Error")
        self.kind, self.error_code = kind, code

    def to_response(self, ident: Optional[str] = None):
        body = json.dumps({"error": {"message": self.body, "type": TYPE_BY_KIND[self.kind], "param": None,
                                     "code": self.error_code}})
        headers = [("Content-Type", "application/json")]
        if self.kind == "unauthenticated":
            headers.append(("WWW-Authenticate", "Bearer"))
        return f"{self.code} {self.reason}", headers, body.encode()


def gated_channel(api_key: Optional[str], max_body: int, header_timeout: float) -> type[HTTPChannel]:
    """A waitress channel class whose parser applies the refusals above."""

    class GatedParser(HTTPRequestParser):
        first_byte_at: Optional[float] = None

        def received(self, data: bytes) -> int:
            self.first_byte_at = self.first_byte_at or time.monotonic()
            had_headers = self.headers_finished
            consumed = super().received(data)
            if not self.headers_finished and not self.completed:
                if time.monotonic() - self.first_byte_at > header_timeout:
                    self.parse_header(b"GET / HTTP/1.0\r\n")  # waitress's own way to answer a cut-off request
                    self._refuse(JsonError(408, "invalid", f"the request headers took over {header_timeout:g} s",
                                           "header_timeout"))
            elif self.headers_finished and not had_headers:
                refusal = self._refusal()
                if refusal is not None:
                    self._refuse(refusal)
            if self.error is not None and not isinstance(self.error, JsonError):
                self.error = self._as_json(self.error)
            return consumed

        def _refusal(self) -> Optional[JsonError]:
            if not (self.content_length > 0 or self.chunked):
                return None  # no body to protect: the app checks the key
            if api_key is not None and not key_matches(self.headers.get("AUTHORIZATION", ""), api_key):
                return JsonError(401, "unauthenticated", KEY_MESSAGE, "unauthenticated")
            if self.content_length > max_body:
                return JsonError(400, "invalid", f"the request body is {self.content_length} bytes; the limit is "
                                 f"{max_body} (max_request_bytes)", "body_too_large")
            return None

        @staticmethod
        def _as_json(error: Error) -> JsonError:
            if error.code == 413:  # a chunked body past the limit: the same answer as a declared one
                return JsonError(400, "invalid", f"the request body is over {max_body} bytes (max_request_bytes)",
                                 "body_too_large")
            return JsonError(error.code, "invalid", error.body, "bad_request")

        def _refuse(self, error: JsonError) -> None:
            self.error, self.completed = error, True
            self.expect_continue = False  # a client waiting for 100 Continue never sends the body

    class GatedChannel(HTTPChannel):
        parser_class = GatedParser

    return GatedChannel
