"""Errors of a served request, each with the ``kind`` that travels over the wire.

Transports map kinds to their status codes: ``invalid`` → HTTP 400 / INVALID_ARGUMENT,
``queue_full`` → 503 + Retry-After / RESOURCE_EXHAUSTED, ``unavailable`` (replica lost, shutting
down) → 503 / UNAVAILABLE, ``cancelled`` → CANCELLED, anything else → 500 / INTERNAL.
"""
from __future__ import annotations


class ServingError(RuntimeError):
    kind = "internal"


class InvalidRequest(ServingError, ValueError):
    """The request itself is wrong (unknown option, bad type, prompt too long, ...)."""

    kind = "invalid"


class QueueFull(ServingError):
    """More requests wait than ``max_queued_requests``; retry later."""

    kind = "queue_full"


class Unavailable(ServingError):
    """The deployment cannot run the request now: a replica was lost, or it is shutting down."""

    kind = "unavailable"


class RequestCancelled(ServingError):
    kind = "cancelled"


class DeploymentStartError(RuntimeError):
    """A deployment did not come up; the message carries the failing process's log tail."""


_BY_KIND = {cls.kind: cls for cls in (ServingError, InvalidRequest, QueueFull, Unavailable, RequestCancelled)}


def error_kind(exc: BaseException) -> str:
    """The wire kind of any exception: a user error (ValueError/TypeError) is ``invalid``."""
    if isinstance(exc, ServingError):
        return exc.kind
    if isinstance(exc, (ValueError, TypeError)):
        return "invalid"
    return "internal"


def error_from_wire(kind: str, message: str) -> ServingError:
    return _BY_KIND.get(kind, ServingError)(message)
