"""The "grpc" transport: a grpcio server on host:port serving ModelResponse (and MII Legacy's
legacymodelresponse.ModelResponse) over the router."""
from __future__ import annotations

from concurrent import futures
from typing import Any, Callable, Optional

import grpc
from google.protobuf import empty_pb2

from mii_core.serving.transport import TaskClient, Transport
from mii_server_grpc.legacy_service import LegacyService, legacy_handlers
from mii_server_grpc.proto import modelresponse_pb2 as pb
from mii_server_grpc.service import ModelResponseService, UndecodableRequest

SERVICE_NAME = "modelresponse.ModelResponse"
STOP_GRACE_SECONDS = 2.0


def _lenient(parse: Callable[[bytes], Any], what: str) -> Callable[[bytes], Any]:
    """A body that does not parse reaches the service as UndecodableRequest (INVALID_ARGUMENT there)
    instead of gRPC's generic INTERNAL for a deserializer error."""
    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception as exc:
            return UndecodableRequest(f"the request is not a valid {what} message ({exc})")
    return deserialize


def method_handlers(service: ModelResponseService) -> grpc.GenericRpcHandler:
    generate_in = _lenient(pb.MultiStringRequest.FromString, "MultiStringRequest")
    reply_out = pb.MultiGenerationReply.SerializeToString
    empty_in = _lenient(empty_pb2.Empty.FromString, "Empty")
    handlers = {
        "GeneratorReply": grpc.unary_unary_rpc_method_handler(
            service.GeneratorReply, request_deserializer=generate_in, response_serializer=reply_out),
        "GeneratorReplyStream": grpc.unary_stream_rpc_method_handler(
            service.GeneratorReplyStream, request_deserializer=generate_in, response_serializer=reply_out),
        "Terminate": grpc.unary_unary_rpc_method_handler(
            service.Terminate, request_deserializer=empty_in, response_serializer=empty_pb2.Empty.SerializeToString),
        "Health": grpc.unary_unary_rpc_method_handler(
            service.Health, request_deserializer=empty_in, response_serializer=pb.HealthReply.SerializeToString),
    }
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)


class GrpcTransport(Transport):
    def start(self) -> None:
        limit = self.settings.max_request_bytes
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self.settings.threads, thread_name_prefix="grpc"),
            options=[("grpc.so_reuseport", 0),  # a taken port must be an error, not a shared port
                     ("grpc.max_receive_message_length", limit)])
        self._server.add_generic_rpc_handlers((method_handlers(ModelResponseService(self.backend, self.settings)),
                                               legacy_handlers(LegacyService(self.backend, self.settings), _lenient)))
        address = f"{self.settings.host}:{self.settings.port}"
        try:
            bound = self._server.add_insecure_port(address)
        except RuntimeError as exc:
            raise OSError(f"gRPC cannot listen on {address}: {exc}") from None
        if bound == 0:
            raise OSError(f"gRPC cannot listen on {address} (in use?)")
        self._server.start()

    def stop(self) -> None:
        self._server.stop(STOP_GRACE_SECONDS).wait()

    @classmethod
    def task_client(cls, host: str, port: int, task: str, api_key: Optional[str]) -> TaskClient:
        from mii_server_grpc.legacy_client import LegacyGrpcClient

        return LegacyGrpcClient(host, port, task, api_key)
