"""The REST front end's connection limits, set through the router's environment.

Waitress parses requests on one event loop and runs the app on ``threads`` workers; idle or slow
connections hold no worker, only a slot under ``connection_limit``. MII's waitress defaults (100-128
slots, 120 s idle) let 127 silent connections lock REST out, so the slots here are many and an
idle or slow connection is closed within seconds. Waitress watches its sockets with ``select()``,
which stops at 1,024 descriptors, so the limit stays below that (its ``poll()`` mode would lift it,
but changes how a client that stops reading a stream holds its request).

========================== ======= ===========================================================
variable                   default what it bounds
========================== ======= ===========================================================
MII_REST_CONNECTION_LIMIT  900     open connections, at most 900 (then new ones wait in the backlog)
MII_REST_IDLE_TIMEOUT      10      seconds a connection may stay silent between requests
MII_REST_HEADER_TIMEOUT    10      seconds from a request's first byte to the end of its headers
========================== ======= ===========================================================
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from pydantic import PositiveFloat, PositiveInt, TypeAdapter, ValidationError

MAX_CONNECTIONS = 900  # select()'s 1,024 descriptors, less those the router holds itself


@dataclass(frozen=True)
class RestLimits:
    connection_limit: int = 900
    idle_timeout: int = 10  # waitress's channel_timeout: whole seconds
    header_timeout: float = 10.0

    @classmethod
    def from_environment(cls) -> "RestLimits":
        limits = cls(connection_limit=_positive("MII_REST_CONNECTION_LIMIT", cls.connection_limit, int),
                     idle_timeout=_positive("MII_REST_IDLE_TIMEOUT", cls.idle_timeout, int),
                     header_timeout=_positive("MII_REST_HEADER_TIMEOUT", cls.header_timeout, float))
        if limits.connection_limit > MAX_CONNECTIONS:
            raise ValueError(f"$MII_REST_CONNECTION_LIMIT={limits.connection_limit}: at most {MAX_CONNECTIONS} "
                             "(waitress's select() loop stops at 1,024 descriptors)")
        return limits


def _positive(name: str, default, kind):
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        return _POSITIVE[kind].validate_python(text)  # pydantic's lax parse of the text, then > 0
    except ValidationError:
        raise ValueError(f"${name}={text!r}: give a positive {kind.__name__} (default {default})") from None


_POSITIVE = {int: TypeAdapter(PositiveInt), float: TypeAdapter(PositiveFloat)}
