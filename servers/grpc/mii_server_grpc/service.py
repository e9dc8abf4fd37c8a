"""The ModelResponse service over a mii-core Backend (the deployment's router)."""
from __future__ import annotations

import hmac
import json
from typing import Any, Iterator, Optional

import grpc
from google.protobuf import empty_pb2

from mii_core.serving.backend import Backend, Chunk
from mii_core.serving.errors import error_kind
from mii_core.serving.transport import TransportSettings
from mii_server_grpc.convert import to_generate_request, to_reply
from mii_server_grpc.proto import modelresponse_pb2 as pb

STATUS_BY_KIND = {
    "invalid": grpc.StatusCode.INVALID_ARGUMENT,
    "queue_full": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
    "cancelled": grpc.StatusCode.CANCELLED,
    "unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
}
# The status message travels in trailing metadata (8 KiB by default): a longer one would turn the
# status into RESOURCE_EXHAUSTED, so it is cut (the engine's messages already quote values briefly).
MAX_DETAILS_CHARS = 2000


class UndecodableRequest:
    """Stands in for a request body that is not a valid message, so it is refused as INVALID_ARGUMENT."""

    def __init__(self, error: str) -> None:
        self.error = error


class ModelResponseService:
    def __init__(self, backend: Backend, settings: TransportSettings) -> None:
        self.backend, self.settings = backend, settings

    def GeneratorReply(self, request: Any, context: grpc.ServicerContext) -> pb.MultiGenerationReply:
        stream = self._start(request, context, streaming=False)
        try:
            responses = stream.result()
        except Exception as exc:
            self._abort(context, exc)
        return pb.MultiGenerationReply(response=[to_reply(r, i) for i, r in enumerate(responses)])

    def GeneratorReplyStream(self, request: Any, context: grpc.ServicerContext) -> Iterator[pb.MultiGenerationReply]:
        stream = self._start(request, context, streaming=True)
        try:
            for event in stream.events():
                if isinstance(event, Chunk) and event.has_news:
                    yield pb.MultiGenerationReply(response=[to_reply(event.response, event.index)])
        except Exception as exc:
            self._abort(context, exc)

    def Terminate(self, request: Any, context: grpc.ServicerContext) -> empty_pb2.Empty:
        self._authorize(context)
        self.backend.terminate()
        return empty_pb2.Empty()

    def Health(self, request: Any, context: grpc.ServicerContext) -> pb.HealthReply:
        health = self.backend.health()
        return pb.HealthReply(status=health["status"], detail_json=json.dumps(health))

    def _start(self, request: Any, context: grpc.ServicerContext, streaming: bool):
        self._authorize(context)
        if isinstance(request, UndecodableRequest):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.error)
        try:
            stream = self.backend.submit(to_generate_request(request, stream=streaming))
        except Exception as exc:
            self._abort(context, exc)
        context.add_callback(stream.cancel)  # the client went away (or the call ended): free the engine
        return stream

    def _authorize(self, context: grpc.ServicerContext) -> None:
        authorize(context, self.settings.api_key)

    @staticmethod
    def _abort(context: grpc.ServicerContext, exc: Exception) -> None:
        abort(context, exc)


def authorize(context: grpc.ServicerContext, key: Optional[str]) -> None:
    """Aborts the call (UNAUTHENTICATED) unless it carries the deployment's API key (when one is set)."""
    if key is None:
        return
    metadata = dict(context.invocation_metadata())
    given = metadata.get("authorization", "")
    token = given[7:] if given.lower().startswith("bearer ") else metadata.get("x-api-key", "")
    if not hmac.compare_digest(token.encode(), key.encode()):
        context.abort(grpc.StatusCode.UNAUTHENTICATED,
                      "this deployment needs its API key: metadata 'authorization: Bearer <api_key>'")


def abort(context: grpc.ServicerContext, exc: Exception) -> None:
    """Ends the call with the status of the error's kind and its message (cut to fit the trailers)."""
    kind = error_kind(exc)
    details = str(exc) or type(exc).__name__
    if len(details) > MAX_DETAILS_CHARS:
        details = f"{details[:MAX_DETAILS_CHARS]}... ({len(details)} characters)"
    context.abort(STATUS_BY_KIND.get(kind, grpc.StatusCode.INTERNAL), details)
