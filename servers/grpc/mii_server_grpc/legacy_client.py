"""The Python client of MII Legacy's gRPC service: what ``mii_core.legacy.mii_query_handle`` queries a local
deployment through (``GrpcTransport.task_client``). Images go as PNG bytes and come back as PIL images."""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any, Optional

import grpc

from mii_core.legacy.local import encoded_image
from mii_core.serving.errors import error_from_wire
from mii_server_grpc.legacy_convert import METHODS, Method, python_to_value
from mii_server_grpc.legacy_service import SERVICE_NAME
from mii_server_grpc.proto import legacymodelresponse_pb2 as pb

KIND_BY_STATUS = {grpc.StatusCode.INVALID_ARGUMENT: "invalid", grpc.StatusCode.RESOURCE_EXHAUSTED: "queue_full",
                  grpc.StatusCode.UNAVAILABLE: "unavailable", grpc.StatusCode.CANCELLED: "cancelled"}
MAX_MESSAGE_BYTES = 256 * 2**20  # a batch of 512x512 PNGs fits


@dataclass(frozen=True)
class ImagesResponse:
    """An image task's response as MII's: ``images`` (PIL) and ``nsfw_content_detected`` (None: not checked)."""

    images: list
    nsfw_content_detected: Optional[list[bool]]


class LegacyGrpcClient:
    def __init__(self, host: str, port: int, task: str, api_key: Optional[str] = None) -> None:
        if task not in METHODS:
            raise ValueError(f"the legacy gRPC service has no method for task '{task}' (it serves {sorted(METHODS)})")
        self.task, self.method = task, METHODS[task]
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
        self._channel = grpc.insecure_channel(f"{host}:{port}", options=options)
        self._call = self._channel.unary_unary(f"/{SERVICE_NAME}/{self.method.name}",
                                               request_serializer=self.method.request.SerializeToString,
                                               response_deserializer=self.method.reply.FromString)
        self._metadata = [("authorization", f"Bearer {api_key}")] if api_key else None

    def query(self, query: dict[str, Any], options: dict[str, Any]) -> tuple[Any, float]:
        kwargs = {key: python_to_value(value) for key, value in options.items()}
        request = self.method.to_request({key: encoded_image(value) for key, value in query.items()}, kwargs)
        try:
            reply = self._call(request, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise error_from_wire(KIND_BY_STATUS.get(exc.code(), "internal"), exc.details() or str(exc)) from None
        return _response(self.method, reply), reply.time_taken

    def close(self) -> None:
        self._channel.close()


def _response(method: Method, reply: Any) -> Any:
    if method.reply is pb.ImageReply:
        import PIL.Image  # only image tasks need it

        images = [PIL.Image.open(io.BytesIO(data)) for data in reply.images]
        flags = list(reply.nsfw_content_detected) or None
        return ImagesResponse(images, flags)
    if method.reply is pb.MultiStringReply:
        return list(reply.response)
    return json.loads(reply.response)
