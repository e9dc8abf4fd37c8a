"""``mii_core.client(name)`` and the client ``serve()`` returns (MII's ``MIIClient``).

The client talks to the deployment's router over the deployment's own link (its key is in the
deployment record, readable by its owner only), so it needs no transport plugin.
"""
from __future__ import annotations

import os
import signal
import time
from typing import Any, Callable, Optional, Sequence, Union

from mii_core.config.deployment import DEPLOYMENT_NAME_PATTERN, default_deployment_name
from mii_core.response import Response
from mii_core.serving.backend import Chunk, GenerateRequest
from mii_core.serving.errors import Unavailable
from mii_core.serving.link import LinkBroken, RemoteBackend
from mii_core.serving.metadata import DeploymentRecord, cache_root, known_deployments, process_alive, read_record

TERMINATE_TIMEOUT = 60.0


class MIIClient:
    def __init__(self, record: DeploymentRecord) -> None:
        self.deployment_name = record.name
        self.record = record
        self._backend = RemoteBackend(record.router_link, record.key)

    def __call__(self, prompts: Union[str, Sequence[str]], streaming_fn: Optional[Callable] = None,
                 **generate_kwargs: Any) -> list[Response]:
        return self.generate(prompts, streaming_fn, **generate_kwargs)

    def generate(self, prompts: Union[str, Sequence[str]], streaming_fn: Optional[Callable] = None,
                 **generate_kwargs: Any) -> list[Response]:
        """A Response per prompt. ``streaming_fn`` (one prompt only, as in MII) is called with
        ``[Response]`` for each new piece of text; the last piece carries the finish_reason."""
        if isinstance(prompts, str):
            prompts = [prompts]
        elif isinstance(prompts, (list, tuple)):
            prompts = list(prompts)
        if streaming_fn is not None and (not isinstance(prompts, list) or len(prompts) != 1):
            raise ValueError("streaming_fn streams a single prompt (as in MII); pass one prompt, or leave "
                             "streaming_fn out to get a list of Responses")
        request = GenerateRequest(prompts=prompts, options=generate_kwargs, stream=streaming_fn is not None)
        try:
            stream = self._backend.submit(request)
            for event in stream.events():
                if streaming_fn is not None and isinstance(event, Chunk) and event.has_news:
                    streaming_fn([event.response])
        except LinkBroken as exc:
            raise Unavailable(f"deployment '{self.deployment_name}' is not reachable ({exc}); is it running?") from None
        return stream.responses

    def health(self) -> dict[str, Any]:
        return self._backend.health()

    def terminate_server(self, timeout: float = TERMINATE_TIMEOUT) -> None:
        """Stops every process of the deployment (from any client) and waits until they are gone."""
        try:
            self._backend.terminate()
        except LinkBroken:
            pass  # already stopping or gone: the wait below tells
        pids = [self.record.router_pid, *self.record.replica_pids]
        deadline = time.monotonic() + timeout
        while any(process_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        if any(process_alive(pid) for pid in pids):  # a stuck deployment: end its process group
            try:
                os.killpg(self.record.router_pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def client(model_or_deployment_name: str) -> MIIClient:
    """The client of a running deployment, by its name or by its model (MII's default name)."""
    names = [model_or_deployment_name, default_deployment_name(model_or_deployment_name)]
    for name in names:
        record = read_record(name) if DEPLOYMENT_NAME_PATTERN.match(name) else None
        if record is not None:
            break
    else:
        known = ", ".join(known_deployments()) or "none"
        raise ValueError(f"no deployment named '{names[0]}' or '{names[1]}' in {cache_root()} "
                         f"(known deployments: {known}); start one with mii_core.serve()")
    if record.status != "ready" or not process_alive(record.router_pid):
        raise Unavailable(f"deployment '{record.name}' is not running ({record.status}, router pid "
                          f"{record.router_pid}); start it again with mii_core.serve()")
    return MIIClient(record)
