"""The gRPC front end (mii-server-grpc) through a stub generated from its .proto, as a user would call it."""

import json

import grpc
import pytest
from google.protobuf import empty_pb2

from mii_server_grpc.convert import make_request
from mii_server_grpc.proto import modelresponse_pb2 as pb
from mii_server_grpc.proto import modelresponse_pb2_grpc as pb_grpc
from support.prompts import MIXED_PROMPTS

GREEDY = dict(do_sample=False, ignore_eos=True)


@pytest.fixture(scope="module")
def grpc_api(demo, chat_checkpoint, oracle):
    host, port = demo.record.front_ends["grpc"]
    channel = grpc.insecure_channel(f"{host}:{port}")
    yield pb_grpc.ModelResponseStub(channel), channel, oracle(chat_checkpoint)
    channel.close()


def replies_as_tuples(reply):
    return [(r.response, r.finish_reason, r.prompt_tokens, r.generated_tokens) for r in reply.response]


def test_unary_generate_matches_hf(grpc_api):
    stub, _, hf = grpc_api
    reply = stub.GeneratorReply(make_request(MIXED_PROMPTS, max_new_tokens=16, **GREEDY), timeout=120)
    expected = [hf.greedy(p, 16, ignore_eos=True) for p in MIXED_PROMPTS]
    assert replies_as_tuples(reply) == [(g.text, g.finish_reason, g.prompt_length, g.generated_length) for g in expected]


def test_server_streaming_adds_up_to_the_unary_reply(grpc_api):
    stub, _, _ = grpc_api
    request = make_request(MIXED_PROMPTS[:3], max_new_tokens=20, stop=["the", "ea"], **GREEDY)
    whole = stub.GeneratorReply(request, timeout=120)
    pieces = [r.response[0] for r in stub.GeneratorReplyStream(request, timeout=120)]
    for index, expected in enumerate(whole.response):
        mine = [p for p in pieces if p.index == index]
        assert "".join(p.response for p in mine) == expected.response
        assert [p.finish_reason for p in mine] == ["none"] * (len(mine) - 1) + [expected.finish_reason]


def test_several_stop_strings_survive_the_wire(grpc_api):
    stub, _, hf = grpc_api
    reference = hf.greedy("The old man", 24, ignore_eos=True).text
    early, late = reference[4:7], reference[12:15]
    assert reference.find(early) < reference.find(late)
    reply = stub.GeneratorReply(make_request(["The old man"], max_new_tokens=24, stop=[late, early], **GREEDY))
    assert reply.response[0].response == reference[:reference.find(early)]
    assert reply.response[0].finish_reason == "stop"


def test_mii_float32_values_are_read_as_meant(grpc_api):
    stub, _, _ = grpc_api
    request = pb.MultiStringRequest(request=["river"], query_kwargs={
        "top_p": pb.Value(fvalue=0.9), "max_new_tokens": pb.Value(ivalue=4), "seed": pb.Value(ivalue=3)})
    assert stub.GeneratorReply(request).response[0].generated_tokens == 4  # top_p 0.9 (f32) accepted


@pytest.mark.parametrize("request_message, names", [
    (make_request(["river"], bogus=1), "unknown option 'bogus'"),
    (make_request(["river"], max_new_tokens="four"), "max_new_tokens"),
    (make_request([]), "prompts is empty"),
    (make_request(["river " * 600], max_new_tokens=4), "prompt"),
    (make_request(["river"], max_length=2), "must exceed the prompt length"),
    (pb.MultiStringRequest(request=["river"], query_kwargs={"top_k": pb.Value()}), "value is empty"),
    (make_request(["river"], logprobs=2), "logprobs are not available over gRPC"),
], ids=["unknown-option", "wrong-type", "no-prompts", "over-model-length", "over-max-length", "empty-value",
        "logprobs"])
def test_bad_input_is_invalid_argument_naming_the_problem(grpc_api, request_message, names):
    stub, _, hf = grpc_api
    with pytest.raises(grpc.RpcError) as failure:
        stub.GeneratorReply(request_message, timeout=60)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert names in failure.value.details()
    with pytest.raises(grpc.RpcError) as streamed:
        list(stub.GeneratorReplyStream(request_message, timeout=60))
    assert streamed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    reply = stub.GeneratorReply(make_request(["river"], max_new_tokens=4, **GREEDY))
    assert reply.response[0].response == hf.greedy("river", 4, ignore_eos=True).text


def test_bytes_that_are_no_message_are_invalid_argument(grpc_api):
    _, channel, _ = grpc_api
    raw = channel.unary_unary("/modelresponse.ModelResponse/GeneratorReply",
                              request_serializer=lambda b: b, response_deserializer=lambda b: b)
    with pytest.raises(grpc.RpcError) as failure:
        raw(b"\xff\xff\xff\xff not a protobuf", timeout=30)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid MultiStringRequest" in failure.value.details()


def test_health_reports_the_replicas(grpc_api):
    stub, _, _ = grpc_api
    reply = stub.Health(empty_pb2.Empty())
    assert reply.status == "ok"
    assert [r["alive"] for r in json.loads(reply.detail_json)["replicas"]] == [True, True]


def test_a_legacy_task_method_on_a_generation_deployment_is_refused(grpc_api):
    from mii_server_grpc.proto import legacymodelresponse_pb2 as legacy_pb, modelresponse_pb2 as shared_pb

    _, channel, _ = grpc_api
    call = channel.unary_unary("/legacymodelresponse.ModelResponse/FillMaskReply",
                               request_serializer=shared_pb.SingleStringRequest.SerializeToString,
                               response_deserializer=legacy_pb.SingleStringReply.FromString)
    with pytest.raises(grpc.RpcError) as raised:
        call(shared_pb.SingleStringRequest(request="a [MASK]."), timeout=60)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "MII Legacy task queries go to a deployment started by mii_core.legacy.deploy" in raised.value.details()
