"""The API key check every guarded route shares (MII's routes and the OpenAI-compatible ones)."""
from __future__ import annotations

import hmac
from functools import wraps
from typing import Any, Callable

from flask import request

from mii_core.serving.transport import TransportSettings
from mii_server_rest.errors import HttpError


def needs_key(settings: TransportSettings) -> Callable:
    """With an api_key, the view answers only ``Authorization: Bearer <api_key>``."""
    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if settings.api_key is not None:
                header = request.headers.get("Authorization", "")
                token = header[7:] if header.lower().startswith("bearer ") else ""
                if not hmac.compare_digest(token.encode(), settings.api_key.encode()):
                    raise HttpError("unauthenticated", "this deployment needs its API key: send the header "
                                    "'Authorization: Bearer <api_key>'")
            return view(*args, **kwargs)
        return guarded
    return decorate
