"""Hostile input to a real deployment's REST and gRPC front ends on 127.0.0.1 (issue 22, rows 2, 3, 7, 10-13).

Every refusal is a 4xx with OpenAI's JSON error shape (or INVALID_ARGUMENT) naming what to change, and
the deployment keeps answering well-formed requests, checked against the HF reference.
"""
from __future__ import annotations

import json
import os
import socket
import time

import grpc
import pytest
import requests

from mii_server_grpc.convert import make_request
from mii_server_grpc.proto import modelresponse_pb2 as pb
from mii_server_grpc.proto import modelresponse_pb2_grpc as pb_grpc

KEY = "sk-front-end-limits"
AUTH = {"Authorization": f"Bearer {KEY}"}
NAME = "hardened"
GREEDY = {"do_sample": False, "ignore_eos": True}
MAX_BODY = 2**20


LIMITS = {"MII_REST_IDLE_TIMEOUT": "3", "MII_REST_HEADER_TIMEOUT": "2"}  # the router reads them at start


@pytest.fixture(scope="module")
def hardened(chat_checkpoint, deploy, oracle):
    saved = {name: os.environ.get(name) for name in LIMITS}
    os.environ.update(LIMITS)
    try:
        client = deploy(chat_checkpoint, deployment_name=NAME, enable_restful_api=True,
                        restful_api_host="127.0.0.1", host="127.0.0.1", api_key=KEY, max_request_bytes=MAX_BODY)
    finally:
        for name, value in saved.items():
            os.environ.pop(name) if value is None else os.environ.__setitem__(name, value)
    host, port = client.record.front_ends["rest"]
    assert host == "127.0.0.1"
    return client, port, oracle(chat_checkpoint)


def post(port: int, path: str, body, headers=AUTH, timeout: float = 60):
    return requests.post(f"http://127.0.0.1:{port}{path}", json=body, headers=headers, timeout=timeout)


def assert_json_error(response, status: int, mentions: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    assert mentions in error["message"] or mentions in error["code"], error
    return error


def greedy_still_right(port: int, hf) -> None:
    answer = post(port, f"/mii/{NAME}", {"prompts": ["The old man"], "max_new_tokens": 6, **GREEDY})
    assert answer.status_code == 200, answer.text
    assert answer.json()[0]["generated_text"] == hf.greedy("The old man", 6, ignore_eos=True).text


# ---- row 2: numbers out of range are refused when the request is checked ----

@pytest.mark.parametrize("value", [9223372036854775808, 10**30, 2**31])
def test_a_huge_top_k_is_a_400_naming_it(hardened, value):
    _, port, hf = hardened
    assert_json_error(post(port, f"/mii/{NAME}", {"prompts": ["Seattle is"], "top_k": value}), 400, "top_k")
    greedy_still_right(port, hf)


def test_a_huge_max_tokens_is_a_400_naming_it(hardened):
    _, port, _ = hardened
    body = {"model": NAME, "prompt": "Seattle is", "max_tokens": 10**30}
    assert_json_error(post(port, "/v1/completions", body), 400, "max_tokens")


def test_a_huge_top_k_over_grpc_is_invalid_argument(hardened):
    client, _, _ = hardened
    with grpc.insecure_channel("127.0.0.1:%d" % client.record.front_ends["grpc"][1]) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            pb_grpc.ModelResponseStub(channel).GeneratorReply(
                make_request(["Seattle is"], top_k=2**62), metadata=[("authorization", f"Bearer {KEY}")], timeout=60)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "top_k" in refused.value.details()


# ---- row 3: idle connections do not lock REST out ----

def test_500_idle_connections_leave_rest_serving(hardened):
    _, port, hf = hardened
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(500)]
    try:
        started = time.monotonic()
        for _ in range(3):
            greedy_still_right(port, hf)
        assert time.monotonic() - started < 60
        deadline = time.monotonic() + 15  # the idle timeout (3 s here) closes them, bounded
        for sock in idle:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            assert sock.recv(1) == b""
    finally:
        for sock in idle:
            sock.close()


def test_headers_sent_a_byte_at_a_time_are_cut_off(hardened):
    _, port, _ = hardened
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"POST /mii/{NAME} HTTP/1.1\r\n".encode())
        started = time.monotonic()
        answer = b""
        while time.monotonic() - started < 15 and not answer:
            try:
                sock.sendall(b"X")
            except OSError:
                break  # closed by the server
            time.sleep(0.5)
            sock.setblocking(False)
            try:
                answer = sock.recv(65536)
            except BlockingIOError:
                pass
            finally:
                sock.setblocking(True)
    assert answer.split(b" ", 2)[1] == b"408", answer
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"] == "header_timeout"
    assert time.monotonic() - started < 10


# ---- row 7: refused from the headers, before the body is read ----

def raw_post_headers(port: int, length: int, authorization: str | None) -> tuple[int, dict]:
    """Sends only the headers of a POST declaring ``length`` bytes; returns the status and JSON answer."""
    auth = f"Authorization: {authorization}\r\n" if authorization else ""
    head = (f"POST /mii/{NAME} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"{auth}Content-Length: {length}\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode())
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            piece = sock.recv(65536)  # times out (a failure) if the server waits for the body
            if not piece:
                break
            answer += piece
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


def test_a_body_without_the_key_is_refused_before_it_is_read(hardened):
    _, port, _ = hardened
    status, body = raw_post_headers(port, 60 * 2**20, None)
    assert status == 401 and "API key" in body["error"]["message"]
    status, _ = raw_post_headers(port, 100, "Bearer wrong")
    assert status == 401


def test_a_body_over_max_request_bytes_is_refused_from_its_length(hardened):
    _, port, hf = hardened
    status, body = raw_post_headers(port, 60 * 2**20, f"Bearer {KEY}")
    assert status == 400 and body["error"]["code"] == "body_too_large"
    assert f"limit is {MAX_BODY}" in body["error"]["message"]
    greedy_still_right(port, hf)


# ---- rows 10-13: wrong errors made right ----

def test_a_body_nested_1000_levels_is_bad_json(hardened):
    _, port, _ = hardened
    body = '{"prompts": ' + "[" * 1000 + "]" * 1000 + "}"
    answer = requests.post(f"http://127.0.0.1:{port}/mii/{NAME}", data=body, timeout=60,
                           headers={**AUTH, "Content-Type": "application/json"})
    assert_json_error(answer, 400, "bad_json")


@pytest.mark.parametrize("response_format", ["json", [1]])
def test_a_response_format_that_is_not_an_object_is_a_400_naming_it(hardened, response_format):
    _, port, _ = hardened
    body = {"model": NAME, "messages": [{"role": "user", "content": "hi"}], "response_format": response_format}
    assert_json_error(post(port, "/v1/chat/completions", body), 400, "response_format")


def test_the_largest_seed_with_n_2_is_accepted(hardened):
    _, port, _ = hardened
    body = {"model": NAME, "prompt": "Seattle is", "n": 2, "seed": 18446744073709551615, "max_tokens": 4}
    answer = post(port, "/v1/completions", body)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["choices"]) == 2
    assert post(port, "/v1/completions", body).json()["choices"] == answer.json()["choices"]  # seeded: repeats


@pytest.mark.parametrize("options", [{"stop": "x" * 20000}, {f"unknown{i}": 1 for i in range(10000)}],
                         ids=["long value", "many keys"])
def test_grpc_refuses_huge_options_with_a_short_invalid_argument(hardened, options):
    client, _, _ = hardened
    request = pb.MultiStringRequest(request=["hi"], query_kwargs={
        k: pb.Value(svalue=v) if isinstance(v, str) else pb.Value(ivalue=v) for k, v in options.items()})
    if "stop" in options:
        request.query_kwargs["stop"].CopyFrom(pb.Value(lvalue=pb.ListValue(values=[pb.Value(svalue="x" * 20000),
                                                                                  pb.Value(ivalue=1)])))
    with grpc.insecure_channel("127.0.0.1:%d" % client.record.front_ends["grpc"][1]) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            pb_grpc.ModelResponseStub(channel).GeneratorReply(
                request, metadata=[("authorization", f"Bearer {KEY}")], timeout=60)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(refused.value.details()) < 3000


def test_a_limit_option_that_is_not_positive_is_refused_naming_it(monkeypatch):
    from mii_server_rest.limits import RestLimits

    monkeypatch.setenv("MII_REST_CONNECTION_LIMIT", "0")
    with pytest.raises(ValueError, match="MII_REST_CONNECTION_LIMIT='0': give a positive int"):
        RestLimits.from_environment()
    monkeypatch.setenv("MII_REST_CONNECTION_LIMIT", "5000")
    with pytest.raises(ValueError, match="at most 900"):
        RestLimits.from_environment()
    monkeypatch.setenv("MII_REST_CONNECTION_LIMIT", "800")
    monkeypatch.setenv("MII_REST_HEADER_TIMEOUT", "2.5")
    assert RestLimits.from_environment() == RestLimits(connection_limit=800, header_timeout=2.5)


# ---- the smaller items: /healthz keeps liveness open and its details behind the key ----

def test_healthz_without_the_key_tells_liveness_but_not_where_or_who(hardened):
    client, port, _ = hardened
    url = f"http://127.0.0.1:{port}/healthz"
    public = requests.get(url, timeout=30)
    assert public.status_code == 200 and public.json()["status"] == "ok"
    pids = [replica["pid"] for replica in client.health()["replicas"]]  # the link's answer, with the key
    assert "model" not in public.json(), public.text
    assert all(not {"pid", "rank_pids"} & set(replica) for replica in public.json()["replicas"]), public.text
    private = requests.get(url, headers=AUTH, timeout=30).json()
    assert private["model"] and [replica["pid"] for replica in private["replicas"]] == pids
