"""The transport interface: a deployment's public front ends (gRPC, REST, ...) come from plugins.

A transport plugin registers a :class:`Transport` subclass by name in ``mii_core_register_transports``
(``registry.register("rest", "mii_server_rest.transport:RestTransport")``). The router process builds
one per name the deployment chose, hands it the router as its :class:`~mii_core.serving.backend.Backend`
and the settings below, and calls ``start()``; ``stop()`` at shutdown. The core imports no transport.

What a transport owes its clients (the tests hold every transport to it):
- errors by kind (:mod:`mii_core.serving.errors`): ``invalid`` → 400 / INVALID_ARGUMENT with the
  message, ``queue_full`` → 503 + Retry-After / RESOURCE_EXHAUSTED, ``unavailable`` → 503 / UNAVAILABLE;
- ``api_key`` set: every generation and terminate call without it is refused (401 / UNAUTHENTICATED);
- a client that goes away mid-request: ``ResponseStream.cancel()``, so the engine frees its blocks.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Optional, Protocol

from mii_core.serving.backend import Backend


@dataclass(frozen=True)
class TransportSettings:
    host: str
    port: int
    deployment_name: str
    model_name: str  # model_name_or_path, as OpenAI-style APIs list it
    api_key: Optional[str]
    threads: int  # worker threads (MII's restful_processes)
    max_request_bytes: int
    retry_after_seconds: int = 1
    tokenizer: Optional[str] = None  # the tokenizer's name or folder (/tokenize); None: model_name's
    chat_template: Optional[str] = None  # the model option chat_template (the text), replacing the tokenizer's
    tool_call_parser: Optional[str] = None  # the model option: how chat output is read for tool calls
    task: Optional[str] = None  # an MII Legacy deployment's task (its routes take task queries); None: generation


class Transport(ABC):
    def __init__(self, backend: Backend, settings: TransportSettings) -> None:
        self.backend, self.settings = backend, settings

    @abstractmethod
    def start(self) -> None:
        """Binds host:port (an OSError if taken) and serves from background threads; returns at once."""

    @abstractmethod
    def stop(self) -> None:
        """Stops serving and frees the port."""

    @classmethod
    def task_client(cls, host: str, port: int, task: str, api_key: Optional[str]) -> "TaskClient":
        """A client of this transport for an MII Legacy deployment of ``task`` listening on host:port (what
        ``mii_core.legacy.mii_query_handle`` queries through); a transport without one says so."""
        raise NotImplementedError(f"the {cls.__name__} transport has no MII Legacy query client")


class TaskClient(Protocol):
    def query(self, query: dict[str, Any], options: dict[str, Any]) -> tuple[Any, float]:
        """``(response, time_taken)`` of one task query (its images as PIL images or encoded bytes)."""


def installed_transports() -> dict[str, Any]:
    from mii_core.plugins import get_plugins

    return get_plugins().transports.entries


def check_installed(names: list[str]) -> None:
    """Every chosen transport is installed, else a ValueError naming what is and the pip command."""
    entries = installed_transports()
    missing = [n for n in names if n not in entries]
    if missing:
        installed = ", ".join(sorted(entries)) or "none"
        pips = " ".join(f"mii-server-{n}" for n in missing)
        raise ValueError(f"transport(s) {', '.join(missing)} not installed (installed: {installed}); "
                         f"`pip install {pips}` adds them, or choose others with transports=[...] / "
                         "$MII_CORE_TRANSPORTS")


def load_transport(name: str) -> type[Transport]:
    from mii_core.plugins import get_plugins

    check_installed([name])
    cls = get_plugins().transports.load(name)
    if not (isinstance(cls, type) and issubclass(cls, Transport)):
        raise TypeError(f"transport '{name}' is registered as {cls!r}, which is not a mii_core Transport subclass")
    return cls
