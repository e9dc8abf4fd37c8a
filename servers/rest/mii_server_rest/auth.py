"""The API key check every guarded route shares (MII's routes and the OpenAI-compatible ones)."""
from __future__ import annotations

from functools import wraps
from typing import Any, Callable

from flask import request

from mii_core.serving.transport import TransportSettings
from mii_server_rest.errors import HttpError
from mii_server_rest.gate import KEY_MESSAGE, key_matches


def needs_key(settings: TransportSettings) -> Callable:
    """With an api_key, the view answers only ``Authorization: Bearer <api_key>``."""
    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if settings.api_key is not None and not key_matches(request.headers.get("Authorization", ""),
                                                                 settings.api_key):
                raise HttpError("unauthenticated", KEY_MESSAGE)
            return view(*args, **kwargs)
        return guarded
    return decorate
