"""Named launch configs of a Triton op: one rule for picking one, shared by every op that has them; and the
0/1 environment switches the ops read."""
from __future__ import annotations

import os
from typing import Any, Callable, Mapping


def pick_config(config: Any, named: Mapping[str, Any], env_var: str, what: str,
                overriding: Callable[[Any], Any], default: str = "default") -> Any:
    """``config`` None: the name in ``env_var`` (else ``default``); a name: a copy of that entry of
    ``named``; anything else: ``overriding(config)``, the op's own merge of some keys over the default."""
    if config is None:
        config = os.environ.get(env_var, default)
    if not isinstance(config, str):
        return overriding(config)
    if config not in named:
        raise ValueError(f"unknown {what} config '{config}'; choose one of {sorted(named)}")
    return dict(named[config])


def env_switch(name: str, default: str) -> bool:
    """An environment variable that is "0" or "1"; anything else is refused, naming it."""
    value = os.environ.get(name, default)
    if value not in ("0", "1"):
        raise ValueError(f"{name} must be 0 or 1, not {value!r}")
    return value == "1"
