"""MII Legacy's gRPC messages (legacymodelresponse.proto) ↔ task queries and answers.

One method per task (MII's names). A request becomes the task's query dict; a field left empty is left
out of the query, so the task's own check names the missing key. Text replies carry the response as
JSON; image replies carry PNG bytes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

from mii_server_grpc.convert import python_to_value, value_to_python
from mii_server_grpc.proto import legacymodelresponse_pb2 as pb
from mii_server_grpc.proto import modelresponse_pb2 as shared_pb  # Value and SingleStringRequest


@dataclass(frozen=True)
class Method:
    name: str  # the rpc's name
    request: Any  # its request message class
    reply: Any  # its reply message class
    to_query: Callable[[Any], dict[str, Any]]  # request message → the task's query dict (server side)
    to_request: Callable[[dict[str, Any], dict[str, Any]], Any]  # query, encoded kwargs → message (client side)


def _given(**fields: Any) -> dict[str, Any]:
    """The fields a client set (proto3 cannot tell an empty field from a missing one: both are missing)."""
    return {key: value for key, value in fields.items() if value not in ("", b"", None) and value != []}


def _single(message: shared_pb.SingleStringRequest) -> dict[str, Any]:
    return _given(query=message.request)


def _generation(message: pb.MultiStringRequest) -> dict[str, Any]:
    return _given(query=list(message.request))


def _images(message: pb.MultiStringRequest) -> dict[str, Any]:
    return _given(prompt=list(message.request), negative_prompt=list(message.negative_prompt))


def _qa(message: pb.QARequest) -> dict[str, Any]:
    return _given(question=message.question, context=message.context)


def _zero_shot(message: pb.ZeroShotImgClassificationRequest) -> dict[str, Any]:
    query = _given(image=message.image)
    query["candidate_labels"] = list(message.candidate_labels)  # an empty list is the task's error to name
    return query


def _inpainting(message: pb.InpaintingRequest) -> dict[str, Any]:
    return _given(prompt=list(message.prompt), image=message.image, mask_image=message.mask_image,
                  negative_prompt=list(message.negative_prompt))


def _listed(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


def _prompts(query: dict[str, Any]) -> Any:
    return query.get("prompt", query.get("query"))  # MII's samples send text-to-image prompts as "query"


METHODS = {
    "text-generation": Method("GeneratorReply", pb.MultiStringRequest, pb.MultiStringReply, _generation,
                              lambda q, kw: pb.MultiStringRequest(request=_listed(q.get("query")), query_kwargs=kw)),
    "text-classification": Method("ClassificationReply", shared_pb.SingleStringRequest, pb.SingleStringReply, _single,
                                  lambda q, kw: shared_pb.SingleStringRequest(request=q.get("query", ""), query_kwargs=kw)),
    "question-answering": Method("QuestionAndAnswerReply", pb.QARequest, pb.SingleStringReply, _qa,
                                 lambda q, kw: pb.QARequest(question=q.get("question", ""),
                                                            context=q.get("context", ""), query_kwargs=kw)),
    "fill-mask": Method("FillMaskReply", shared_pb.SingleStringRequest, pb.SingleStringReply, _single,
                        lambda q, kw: shared_pb.SingleStringRequest(request=q.get("query", ""), query_kwargs=kw)),
    "token-classification": Method("TokenClassificationReply", shared_pb.SingleStringRequest, pb.SingleStringReply, _single,
                                   lambda q, kw: shared_pb.SingleStringRequest(request=q.get("query", ""), query_kwargs=kw)),
    "text-to-image": Method("Txt2ImgReply", pb.MultiStringRequest, pb.ImageReply, _images,
                            lambda q, kw: pb.MultiStringRequest(request=_listed(_prompts(q)), query_kwargs=kw,
                                                                negative_prompt=_listed(q.get("negative_prompt")))),
    "zero-shot-image-classification": Method(
        "ZeroShotImgClassificationReply", pb.ZeroShotImgClassificationRequest, pb.SingleStringReply, _zero_shot,
        lambda q, kw: pb.ZeroShotImgClassificationRequest(image=q.get("image", b""), query_kwargs=kw,
                                                          candidate_labels=_listed(q.get("candidate_labels")))),
    "text-to-image-inpainting": Method(
        "InpaintingReply", pb.InpaintingRequest, pb.ImageReply, _inpainting,
        lambda q, kw: pb.InpaintingRequest(prompt=_listed(_prompts(q)), image=q.get("image", b""),
                                           mask_image=q.get("mask_image", b""), query_kwargs=kw,
                                           negative_prompt=_listed(q.get("negative_prompt")))),
    "feature-extraction": Method("EmbeddingsReply", shared_pb.SingleStringRequest, pb.SingleStringReply, _single,
                                 lambda q, kw: shared_pb.SingleStringRequest(request=q.get("query", ""), query_kwargs=kw)),
}


__all__ = ["METHODS", "Method", "options_of", "python_to_value", "to_reply"]


def options_of(message: Any) -> dict[str, Any]:
    return {key: value_to_python(value) for key, value in message.query_kwargs.items()}


def to_reply(method: Method, answer: dict[str, Any]) -> Any:
    """A task answer (``{"response": plain, "time_taken": s}``) as the method's reply message."""
    response, seconds = answer["response"], answer["time_taken"]
    if method.reply is pb.ImageReply:
        flags = response.get("nsfw_content_detected")
        width, height = response.get("size") or (0, 0)
        return pb.ImageReply(images=response["images"], nsfw_content_detected=flags or [], time_taken=seconds,
                             mode=response.get("mode", ""), size_w=width, size_h=height)
    if method.reply is pb.MultiStringReply:
        return pb.MultiStringReply(response=[str(text) for text in response], time_taken=seconds)
    return pb.SingleStringReply(response=json.dumps(response), time_taken=seconds)
