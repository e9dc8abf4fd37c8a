"""Every error as JSON in OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``, with its status."""
from __future__ import annotations

import re

from flask import Response, g, has_request_context, jsonify

from mii_core.serving.errors import error_kind

STATUS_BY_KIND = {"invalid": 400, "unauthenticated": 401, "not_found": 404, "method_not_allowed": 405,
                  "unsupported_media_type": 415, "queue_full": 503,
                  "unavailable": 503, "cancelled": 499, "internal": 500}
TYPE_BY_KIND = {"invalid": "invalid_request_error", "unauthenticated": "authentication_error",
                "not_found": "invalid_request_error", "method_not_allowed": "invalid_request_error",
                "unsupported_media_type": "invalid_request_error", "queue_full": "server_overloaded",
                "unavailable": "service_unavailable", "cancelled": "cancelled", "internal": "server_error"}


class HttpError(Exception):
    """An error found by the REST layer itself (body, route, key); ``param``: the field it is about."""

    def __init__(self, kind: str, message: str, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.kind, self.code, self.param = kind, code, param


# how the engine's messages name the option they refuse ("generation options: invalid value for 'top_k' ...",
# "... unknown option 'bogus' ...", "max_length=290 exceeds ...", "... stop takes at most ...",
# "guided_regex could not be compiled: ...")
_ENGINE_PARAM = re.compile(r"^(?:generation options: )?(?:(?:invalid value for |unknown option )'([a-z_]+)'"
                           r"|([a-z_]+)(?:=| must | takes | could not ))")


def engine_param(message: str) -> str | None:
    """The option an engine error message is about, when it starts by naming one (else None)."""
    found = _ENGINE_PARAM.match(message)
    return (found.group(1) or found.group(2)) if found else None


def _as_requested(param: str | None, message: str) -> tuple[str | None, str]:
    """Where this request gave the engine's ``param`` under a field of its own (response_format's schema is
    the engine's guided_json), that field, and the message saying so."""
    field = (g.get("engine_param_aliases", {}) if has_request_context() else {}).get(param)
    return (field, f"{field} (the engine's {param}): {message}") if field else (param, message)


def name_engine_option_as(option: str, request_field: str) -> None:
    """For the rest of this request: an engine error about ``option`` names ``request_field`` instead."""
    g.engine_param_aliases = {**g.get("engine_param_aliases", {}), option: request_field}


def error_response(kind: str, message: str, code: str | None = None, retry_after: int = 1,
                   param: str | None = None) -> Response:
    response = jsonify({"error": {"message": message, "type": TYPE_BY_KIND.get(kind, "server_error"),
                                  "param": param, "code": code or kind}})
    response.status_code = STATUS_BY_KIND.get(kind, 500)
    if kind == "queue_full":
        response.headers["Retry-After"] = str(retry_after)
    if kind == "unauthenticated":
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


def from_exception(exc: BaseException, retry_after: int = 1) -> Response:
    if isinstance(exc, HttpError):
        return error_response(exc.kind, str(exc), exc.code, retry_after, exc.param)
    kind, message = error_kind(exc), str(exc) or type(exc).__name__
    param = engine_param(message) if kind == "invalid" else None
    param, message = _as_requested(param, message)
    # the engine's own refusals: the option they name, as OpenAI's invalid_<param> codes
    code = (f"invalid_{param}" if param else "invalid_request") if kind == "invalid" else None
    return error_response(kind, message, code, retry_after, param)
