"""Where a request may come from: the rules that keep a web page in the user's browser from driving a
deployment on their machine (cross-site requests, DNS rebinding).

A page can send a cross-site POST with a "simple" content type (text/plain, form data) without asking
first, and a rebound DNS name can make the browser send requests to 127.0.0.1 under the attacker's host
name. So: a request body must be ``application/json`` (which a page can only send after a CORS preflight,
and no CORS header is ever sent), and on a loopback bind the ``Host`` header must name the loopback.
"""
from __future__ import annotations

from flask import Flask, request

from mii_core.serving.transport import TransportSettings
from mii_server_rest.errors import HttpError

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


def host_name(host_header: str) -> str:
    """The name part of a ``Host`` header (``[::1]:8000`` → ``::1``, ``localhost:8000`` → ``localhost``)."""
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def register_origin_rules(app: Flask, settings: TransportSettings) -> None:
    loopback_bind = settings.host in LOOPBACK_NAMES or settings.host.startswith("127.")

    @app.before_request
    def check_origin() -> None:
        if loopback_bind and host_name(request.host) not in LOOPBACK_NAMES and \
                not host_name(request.host).startswith("127."):
            raise HttpError("invalid", f"Host {request.host[:100]!r} is not this machine's loopback address, "
                            "where this deployment listens: use localhost or 127.0.0.1", code="bad_host")
        if request.method in ("POST", "PUT", "PATCH") and not request.is_json:
            raise HttpError("unsupported_media_type", f"the body must be JSON with the header 'Content-Type: "
                            f"application/json' (got {request.content_type!r:.100})")


def check_terminate_request(settings: TransportSettings) -> None:
    """``/terminate`` only by POST; without an API key (checked before this), only from this machine."""
    if request.method != "POST":
        raise HttpError("method_not_allowed", "/terminate takes POST (with a JSON body, e.g. {})")
    if settings.api_key is None and request.remote_addr not in ("127.0.0.1", "::1"):
        raise HttpError("unauthenticated", "without an API key, /terminate is answered only from this machine")
