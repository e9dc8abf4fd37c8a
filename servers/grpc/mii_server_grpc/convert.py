"""Protobuf messages ↔ mii-core requests and responses."""
from __future__ import annotations

from typing import Any

from mii_core.response import Response
from mii_core.serving.backend import GenerateRequest
from mii_core.serving.errors import InvalidRequest
from mii_server_grpc.proto import modelresponse_pb2 as pb


def value_to_python(value: pb.Value) -> Any:
    kind = value.WhichOneof("oneof_values")
    if kind is None:
        raise InvalidRequest("a query_kwargs value is empty; set one of svalue, ivalue, fvalue, dvalue, bvalue, "
                             "lvalue, mvalue")
    if kind == "fvalue":  # float32 on the wire (MII's clients): 0.9 arrives as 0.899999976
        return float(f"{value.fvalue:.7g}")
    if kind == "lvalue":
        return [value_to_python(v) for v in value.lvalue.values]
    if kind == "mvalue":
        return {k: value_to_python(v) for k, v in value.mvalue.values.items()}
    return getattr(value, kind)


SCALAR_FIELDS = ((bool, "bvalue"), (int, "ivalue"), (float, "dvalue"), (str, "svalue"))  # bool before int


def scalar_value(value_class: Any, obj: Any) -> Any:
    """``obj`` as a ``value_class`` message, or None when it is not a bool, int, float or str."""
    for kind, name in SCALAR_FIELDS:
        if isinstance(obj, kind):
            return value_class(**{name: obj})
    return None


def python_to_value(obj: Any) -> pb.Value:
    """The other direction, for clients (tests, mii-core's own tools)."""
    scalar = scalar_value(pb.Value, obj)
    if scalar is not None:
        return scalar
    if isinstance(obj, (list, tuple)):
        return pb.Value(lvalue=pb.ListValue(values=[python_to_value(v) for v in obj]))
    if isinstance(obj, dict):
        return pb.Value(mvalue=pb.Dictionary(values={k: python_to_value(v) for k, v in obj.items()}))
    raise TypeError(f"cannot send a {type(obj).__name__} as a query_kwargs value")


def to_generate_request(message: pb.MultiStringRequest, stream: bool) -> GenerateRequest:
    options = {key: value_to_python(value) for key, value in message.query_kwargs.items()}
    options.pop("stream", None)  # the method says whether it streams
    for name in ("logprobs", "prompt_logprobs"):  # MII's reply message has no field for them: they would be lost
        if name in options:
            raise InvalidRequest(f"{name} are not available over gRPC (MII's reply message has no field for them); "
                                 f"use the REST or OpenAI API for {name}")
    return GenerateRequest(prompts=list(message.request), options=options, stream=stream)


def to_reply(response: Response, index: int = 0) -> pb.SingleGenerationReply:
    return pb.SingleGenerationReply(response=response.generated_text, finish_reason=response.finish_reason,
                                    prompt_tokens=response.prompt_length, generated_tokens=response.generated_length,
                                    index=index)


def make_request(prompts: list[str], **options: Any) -> pb.MultiStringRequest:
    return pb.MultiStringRequest(request=prompts, query_kwargs={k: python_to_value(v) for k, v in options.items()})
