"""A local (persistent) MII Legacy deployment over gRPC: MII's sample (deploy, mii_query_handle, query,
terminate) with real router and replica processes, answers equal to HF's fill-mask pipeline, the handle
working from another process, bad queries refused by name (INVALID_ARGUMENT) while the deployment keeps
serving, 32 concurrent clients each with their own answer, and terminate ending every process."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import transformers

import mii_core.legacy as mii
from mii_core.serving.errors import InvalidRequest
from mii_server_grpc.proto import legacymodelresponse_pb2 as pb
from mii_server_grpc.proto import modelresponse_pb2 as shared_pb  # Value and SingleStringRequest
from support.legacy_serving import local_deployment, private_cache
from support.serving import pid_alive
from support.tiny_encoders import build_tiny_encoder

NAME = "bert_deployment"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny_encoder(tmp_path_factory.mktemp("bert-fill-mask"), "bert", "fill-mask")


@pytest.fixture(scope="module")
def deployment(folder, tmp_path_factory):
    with private_cache(tmp_path_factory.mktemp("mii_cache")):
        with local_deployment("fill-mask", folder, NAME) as (handle, record):
            yield handle, record


@pytest.fixture(scope="module")
def hf(folder):
    return transformers.pipeline("fill-mask", model=str(folder), tokenizer=str(folder), device="cpu")


def assert_fill_mask_equal(ours, theirs):
    assert [a["token"] for a in ours] == [e["token"] for e in theirs]
    assert [a["sequence"] for a in ours] == [e["sequence"] for e in theirs]
    assert [a["score"] for a in ours] == pytest.approx([e["score"] for e in theirs], abs=1e-5)


def grpc_call(record, method, request, reply_class):
    host, port = record.front_ends["grpc"]
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        call = channel.unary_unary(f"/legacymodelresponse.ModelResponse/{method}",
                                   request_serializer=type(request).SerializeToString,
                                   response_deserializer=reply_class.FromString)
        return call(request, timeout=60)


def test_mii_sample_answers_as_hf_pipeline(deployment, hf):
    handle, record = deployment
    assert record.legacy["task"] == "fill-mask" and "grpc" in record.front_ends  # gRPC: MII's default
    result = mii.mii_query_handle(NAME).query({"query": "the dog is [MASK] today."})
    assert_fill_mask_equal(result.response, hf("the dog is [MASK] today."))
    assert 0 < result.time_taken < 60
    top2 = handle.query({"query": "paris is the [MASK] of france."}, top_k=2).response
    assert_fill_mask_equal(top2, hf("paris is the [MASK] of france.", top_k=2))


def test_the_handle_works_from_another_process(deployment, hf):
    script = ("import json, mii_core.legacy as mii; "
              f"r = mii.mii_query_handle({NAME!r}).query({{'query': 'a [MASK] model.'}}); "
              "print(json.dumps(r.response))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert_fill_mask_equal(json.loads(out.stdout.strip().splitlines()[-1]), hf("a [MASK] model."))


def test_bad_queries_are_named_and_the_deployment_keeps_serving(deployment, hf):
    handle, record = deployment
    with pytest.raises(InvalidRequest, match="the fill-mask query has no 'query' key"):
        handle.query({})
    with pytest.raises(InvalidRequest, match="unknown fill-mask option"):
        handle.query({"query": "a [MASK]."}, bogus=1)
    with pytest.raises(grpc.RpcError) as raised:  # a raw client: the status and the message
        grpc_call(record, "FillMaskReply", shared_pb.SingleStringRequest(request="no mask here"), pb.SingleStringReply)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "[MASK]" in raised.value.details()
    with pytest.raises(grpc.RpcError) as raised:  # another task's method
        grpc_call(record, "ClassificationReply", shared_pb.SingleStringRequest(request="hi"), pb.SingleStringReply)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "serves 'fill-mask', not 'text-classification'" in raised.value.details()
    reply = grpc_call(record, "FillMaskReply", shared_pb.SingleStringRequest(request="the [MASK] is sunny."),
                      pb.SingleStringReply)  # still serving
    assert_fill_mask_equal(json.loads(reply.response), hf("the [MASK] is sunny."))
    assert reply.time_taken > 0


def test_32_concurrent_clients_and_a_bad_query_that_fails_alone(deployment, hf):
    handle, _ = deployment
    words = ["paris", "france", "capital", "city", "model", "fox", "dog", "movie"]
    texts = [f"the {words[i % 8]} is {'very ' * (i % 5)}[MASK] today." for i in range(32)]
    texts[7] = "a query without the mask token"
    barrier = threading.Barrier(32)

    def client(text):
        barrier.wait()
        try:
            return handle.query({"query": text}).response
        except InvalidRequest as exc:
            return exc

    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(client, texts))
    assert isinstance(answers[7], InvalidRequest) and "[MASK]" in str(answers[7])
    for i, (text, answer) in enumerate(zip(texts, answers)):
        if i != 7:
            assert_fill_mask_equal(answer, hf(text))


def test_unknown_deployment_is_a_clear_error(deployment):
    with pytest.raises(ValueError, match="no legacy deployment named 'nope'"):
        mii.mii_query_handle("nope")
    with pytest.raises(ValueError, match="a deployment named 'bert_deployment' is already running"):
        mii.deploy(task="fill-mask", model=str(deployment[1].legacy["model_dir"]), deployment_name=NAME,
                   mii_config={"port_number": deployment[1].front_ends["grpc"][1] + 100})


def test_terminate_stops_every_process(folder, tmp_path_factory):
    with private_cache(tmp_path_factory.mktemp("mii_cache_terminate")):
        with local_deployment("fill-mask", folder, "short-lived") as (handle, record):
            pids = [record.router_pid, *record.replica_pids]
            assert all(pid_alive(pid) for pid in pids)
            mii.terminate("short-lived")
            assert not any(pid_alive(pid) for pid in pids)
            with pytest.raises(ValueError, match="no legacy deployment named 'short-lived'"):
                mii.mii_query_handle("short-lived")


def test_text_generation_over_grpc_equals_hf_greedy(checkpoint, oracle, tmp_path_factory):
    folder = checkpoint()  # a tiny llama: the replica runs the FastGen pipeline
    prompts = ["Hello world", "DeepSpeed is"]
    with private_cache(tmp_path_factory.mktemp("mii_cache_generation")):
        with local_deployment("text-generation", folder, "gen_deploy") as (handle, _):
            result = handle.query({"query": prompts}, max_new_tokens=6, do_sample=False)
            with pytest.raises(InvalidRequest, match="text-generation query has no 'query' key"):
                handle.query({"prompt": "x"})
    assert result.response == [oracle(folder).greedy(p, 6).text for p in prompts]


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2) of a field number below 16."""
    return bytes([number << 3 | 2, len(payload)]) + payload


def test_mii_legacy_clients_values_arrive_as_sent():
    """A SingleStringRequest as MII Legacy's clients encode it (its legacymodelresponse.proto: Value is svalue 1,
    ivalue 2, float fvalue 3, bvalue 4), the bytes written by hand: a float is field 3, wire type 5, float32."""
    from mii_server_grpc.legacy_convert import options_of

    values = {"temperature": b"\x1d" + struct.pack("<f", 0.25),  # field 3, 32-bit
              "top_k": b"\x10\x07",  # field 2, varint 7
              "sample": b"\x20\x01",  # field 4, varint 1
              "label": _field(1, b"pos")}
    wire = _field(1, b"hi") + b"".join(_field(2, _field(1, key.encode()) + _field(2, value))
                                        for key, value in values.items())
    message = shared_pb.SingleStringRequest.FromString(wire)
    assert message.request == "hi"
    assert options_of(message) == {"temperature": 0.25, "top_k": 7, "sample": True, "label": "pos"}
