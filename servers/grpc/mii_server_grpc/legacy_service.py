"""MII Legacy's gRPC service (``legacymodelresponse.ModelResponse``: one method per task) over the router.

Each method turns its request into a task query naming the method's task; the replica refuses a query
for another task than it serves, and the task checks the query's keys (INVALID_ARGUMENT naming the key
and the task). It is served beside ``modelresponse.ModelResponse`` on the same gRPC port.
"""
from __future__ import annotations

from typing import Any, Callable

import grpc
from google.protobuf import empty_pb2

from mii_core.serving.backend import Backend, TaskQuery
from mii_core.serving.transport import TransportSettings
from mii_server_grpc.legacy_convert import METHODS, Method, options_of, to_reply
from mii_server_grpc.service import UndecodableRequest, abort, authorize

SERVICE_NAME = "legacymodelresponse.ModelResponse"


class LegacyService:
    def __init__(self, backend: Backend, settings: TransportSettings) -> None:
        self.backend, self.settings = backend, settings

    def answer(self, task: str, method: Method, request: Any, context: grpc.ServicerContext) -> Any:
        authorize(context, self.settings.api_key)
        if isinstance(request, UndecodableRequest):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.error)
        try:
            query = TaskQuery(method.to_query(request), options_of(request), task=task)
            stream = self.backend.submit(query)
            context.add_callback(stream.cancel)
            return to_reply(method, stream.result())
        except Exception as exc:  # every error reaches the client with its kind's status
            abort(context, exc)

    def terminate(self, request: Any, context: grpc.ServicerContext) -> empty_pb2.Empty:
        authorize(context, self.settings.api_key)
        self.backend.terminate()
        return empty_pb2.Empty()


def legacy_handlers(service: LegacyService, lenient: Callable[[Callable[[bytes], Any], str], Any]
                    ) -> grpc.GenericRpcHandler:
    """The service's methods; ``lenient`` wraps a parser so that a bad body arrives as UndecodableRequest."""
    handlers = {"Terminate": grpc.unary_unary_rpc_method_handler(
        service.terminate, request_deserializer=lenient(empty_pb2.Empty.FromString, "Empty"),
        response_serializer=empty_pb2.Empty.SerializeToString)}
    for task, method in METHODS.items():
        def call(request: Any, context: grpc.ServicerContext, task: str = task, method: Method = method) -> Any:
            return service.answer(task, method, request, context)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            call, request_deserializer=lenient(method.request.FromString, method.request.__name__),
            response_serializer=method.reply.SerializeToString)
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)
