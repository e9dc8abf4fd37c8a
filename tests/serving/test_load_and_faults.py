"""Under load, faults and guards nothing is lost: 1,000 requests from 64 clients, a full queue,
clients that leave mid-stream, an API key, a replica killed with SIGKILL, terminate under load.

Each test prints its figures (run with -s to see them)."""

import http.client
import json
import os
import shutil
import signal
import statistics
import threading
import time

import grpc
import pytest
import requests

from mii_server_grpc.convert import make_request
from mii_server_grpc.proto import modelresponse_pb2_grpc as pb_grpc
from support.compare import reference_fields
from support.prompts import many_prompts
from support.serving import pid_alive, port_free, processes_mentioning, wait_until

GREEDY = dict(do_sample=False, ignore_eos=True)
LOAD_REQUESTS, LOAD_CLIENTS, GRPC_CLIENTS, LOAD_TOKENS = 1000, 64, 16, 6


def rest_url(client):
    return f"http://localhost:{client.record.front_ends['rest'][1]}"


def grpc_stub(client):
    host, port = client.record.front_ends["grpc"]
    return pb_grpc.ModelResponseStub(grpc.insecure_channel(f"{host}:{port}"))


def replica_engines(client):
    return [r["engine"] for r in client.health()["replicas"]]


def run_clients(count, work):
    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert not any(t.is_alive() for t in threads), "a client hung"


def test_1000_requests_from_64_concurrent_clients_are_all_answered_right(demo, chat_checkpoint, oracle):
    hf = oracle(chat_checkpoint)
    prompts = many_prompts(64)
    expected = {p: reference_fields(hf.greedy(p, LOAD_TOKENS, ignore_eos=True)) for p in prompts}
    url, stub = rest_url(demo), grpc_stub(demo)
    answers, latencies, next_index, lock = [None] * LOAD_REQUESTS, [], iter(range(LOAD_REQUESTS)), threading.Lock()

    def take():
        with lock:
            return next(next_index, None)

    def client(number):
        session = requests.Session()
        while (i := take()) is not None:
            prompt, start = prompts[i % len(prompts)], time.monotonic()
            if number < GRPC_CLIENTS:  # a quarter of the clients speak gRPC
                reply = stub.GeneratorReply(make_request([prompt], max_new_tokens=LOAD_TOKENS, **GREEDY), timeout=120)
                answers[i] = [{"generated_text": r.response, "prompt_length": r.prompt_tokens,
                               "generated_length": r.generated_tokens, "finish_reason": r.finish_reason}
                              for r in reply.response]
            else:
                answers[i] = session.post(f"{url}/mii/demo", json={"prompts": [prompt], "max_new_tokens": LOAD_TOKENS,
                                                                    **GREEDY}, timeout=120).json()
            latencies.append(time.monotonic() - start)

    started = time.monotonic()
    run_clients(LOAD_CLIENTS, client)
    wall = time.monotonic() - started
    lost = sum(a is None for a in answers)
    wrong = sum(a is not None and a != [expected[prompts[i % len(prompts)]]] for i, a in enumerate(answers))
    latencies.sort()
    print(f"\nLOAD {LOAD_REQUESTS} requests x {LOAD_TOKENS} tokens, {LOAD_CLIENTS} clients ({GRPC_CLIENTS} gRPC, "
          f"{LOAD_CLIENTS - GRPC_CLIENTS} REST), 2 replicas: {wall:.1f} s, {LOAD_REQUESTS / wall:.0f} req/s, "
          f"latency p50 {statistics.median(latencies) * 1000:.0f} ms p99 {latencies[int(0.99 * len(latencies))] * 1000:.0f} ms; "
          f"lost {lost}, wrong {wrong}")
    assert (lost, wrong) == (0, 0)
    served = [r["served"] for r in demo.health()["replicas"]]
    assert min(served) > LOAD_REQUESTS // 4, f"both replicas take work: {served}"


def long_sse_request(url, path="/mii/demo", headers=None, max_new_tokens=480):
    """A streamed request that would run ``max_new_tokens`` tokens, read until its first pieces, on a raw
    connection; returns the response, whose ``close()`` leaves (the socket lives as long as the response: the
    connection hands it over to a response that will close it)."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    body = json.dumps({"prompts": "river", "max_new_tokens": max_new_tokens, "stream": True, **GREEDY})
    connection.request("POST", path, body, {"Content-Type": "application/json", **(headers or {})})
    response = connection.getresponse()
    assert response.status == 200
    for _ in range(3):
        assert response.readline().startswith(b"data: ")
        response.readline()
    return response


def test_a_client_that_leaves_mid_stream_cancels_its_request_and_frees_its_blocks(demo):
    cancelled_before = sum(e.get("cancelled", 0) for e in replica_engines(demo))
    response = long_sse_request(rest_url(demo))
    left = time.monotonic()
    response.close()
    wait_until(lambda: sum(e.get("cancelled", 0) for e in replica_engines(demo)) == cancelled_before + 1,
               timeout=15, what="the replica to cancel the abandoned request")
    wait_until(lambda: all(e.get("running") == 0 and e.get("kv_blocks_used") == 0 for e in replica_engines(demo)),
               timeout=15, what="its KV blocks to be freed")
    print(f"\nDISCONNECT (REST SSE): cancelled and blocks freed {time.monotonic() - left:.2f} s after the client left "
          "(health refreshes every 1 s)")

    call = grpc_stub(demo).GeneratorReplyStream(make_request(["river"], max_new_tokens=480, **GREEDY), timeout=60)
    for _ in range(3):
        next(call)
    call.cancel()
    wait_until(lambda: sum(e.get("cancelled", 0) for e in replica_engines(demo)) == cancelled_before + 2,
               timeout=15, what="the cancelled gRPC stream's request to be cancelled")
    wait_until(lambda: all(e.get("kv_blocks_used") == 0 for e in replica_engines(demo)), timeout=15,
               what="the gRPC stream's blocks to be freed")


API_KEY = "s3cret-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


LONG_TOKENS = 3500  # the running request of the queue test: a few seconds on a CPU


@pytest.fixture(scope="module")
def long_context(checkpoint, tmp_path_factory):
    """The gqa checkpoint allowing 4,096 positions (its config edited; plain rope, so greedy output on short
    prompts is unchanged): long enough for a request that holds a sequence slot for seconds."""
    folder = tmp_path_factory.mktemp("gqa-4096")
    shutil.copytree(checkpoint("gqa"), folder, dirs_exist_ok=True)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 4096}))
    return folder


@pytest.fixture(scope="module")
def guarded(long_context, deploy):
    """One sequence at a time in the engine, at most 2 requests waiting, and an API key."""
    engine = {"state_manager": {"max_tracked_sequences": 1, "memory_config": {"mode": "allocate", "size": 96}}}
    return deploy(long_context, deployment_name="guarded", enable_restful_api=True, api_key=API_KEY,
                  max_queued_requests=2, inference_engine_config=engine)


def test_past_max_queued_requests_it_is_503_with_retry_after_and_resource_exhausted(guarded, long_context, oracle):
    hf, url = oracle(long_context), rest_url(guarded)
    # the gRPC channel connected beforehand: the queue stays full only while the running request lasts
    host, port = guarded.record.front_ends["grpc"]
    channel = grpc.insecure_channel(f"{host}:{port}")
    grpc.channel_ready_future(channel).result(timeout=30)
    stub = pb_grpc.ModelResponseStub(channel)
    # holds the engine's only sequence slot (480 tokens streamed in 0.65 s here once the link sent each
    # message at once: too short a window to fill the queue and check it)
    running = long_sse_request(url, "/mii/guarded", AUTH, max_new_tokens=LONG_TOKENS)
    waiting = {}

    def wait_in_line(i):
        waiting[i] = requests.post(f"{url}/mii/guarded", json={"prompts": "The old man", "max_new_tokens": 5, **GREEDY},
                                   headers=AUTH, timeout=120)

    queued = [threading.Thread(target=wait_in_line, args=(i,)) for i in range(2)]
    for t in queued:
        t.start()
    wait_until(lambda: requests.get(f"{url}/healthz").json()["queued_requests"] == 2, what="2 queued requests")
    refused = requests.post(f"{url}/mii/guarded", json={"prompts": "river"}, headers=AUTH)
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
    assert "max_queued_requests=2" in refused.json()["error"]["message"]
    with pytest.raises(grpc.RpcError) as exhausted:
        stub.GeneratorReply(make_request(["river"]), metadata=[("authorization", f"Bearer {API_KEY}")])
    assert exhausted.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    metrics = requests.get(f"{url}/metrics").text
    assert 'mii_requests_total{outcome="queue_full"} 2.0' in metrics  # the REST and the gRPC refusal
    running.close()  # the queue drains: both waiting requests are answered
    for t in queued:
        t.join(timeout=120)
    assert [waiting[i].json() for i in range(2)] == [[reference_fields(hf.greedy("The old man", 5, ignore_eos=True))]] * 2


def test_without_the_api_key_requests_are_refused_401_and_unauthenticated(guarded):
    url = rest_url(guarded)
    for method, path, body in [("post", "/mii/guarded", {"prompts": "river"}), ("get", "/v1/models", None),
                               ("post", "/v1/completions", {"model": "guarded", "prompt": "river"}),
                               ("get", "/terminate", None)]:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            response = getattr(requests, method)(f"{url}{path}", json=body, headers=headers)
            assert response.status_code == 401, (path, response.text)
            assert "API key" in response.json()["error"]["message"]
    assert requests.get(f"{url}/healthz").status_code == 200  # probes need no key
    stub = grpc_stub(guarded)
    for call in (lambda **kw: stub.GeneratorReply(make_request(["river"], max_new_tokens=2), **kw),
                 lambda **kw: list(stub.GeneratorReplyStream(make_request(["river"], max_new_tokens=2), **kw))):
        with pytest.raises(grpc.RpcError) as refused:
            call(metadata=[("authorization", "Bearer wrong")])
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    from google.protobuf import empty_pb2

    with pytest.raises(grpc.RpcError) as refused:
        stub.Terminate(empty_pb2.Empty())
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    ok = requests.post(f"{url}/mii/guarded", json={"prompts": "river", "max_new_tokens": 2}, headers=AUTH)
    assert ok.status_code == 200
    assert stub.GeneratorReply(make_request(["river"], max_new_tokens=2),
                               metadata=[("authorization", f"Bearer {API_KEY}")]).response[0].generated_tokens == 2
    assert guarded.generate("river", max_new_tokens=2)[0].generated_length == 2  # the owner's Python client


@pytest.fixture(scope="module")
def fault(checkpoint, deploy):
    """Two replicas of at most 4 running sequences each, so each also holds requests not yet started."""
    engine = {"state_manager": {"max_tracked_sequences": 4, "memory_config": {"mode": "allocate", "size": 48}}}
    return deploy(checkpoint("gqa"), replica_num=2, deployment_name="fault", enable_restful_api=True,
                  inference_engine_config=engine)


FAULT_TOKENS = 40


def test_sigkill_of_a_replica_under_load(fault, checkpoint, oracle):
    hf, url = oracle(checkpoint("gqa")), rest_url(fault)
    prompts = many_prompts(16)
    expected = {p: [reference_fields(hf.greedy(p, FAULT_TOKENS, ignore_eos=True))] for p in prompts}
    stop, outcomes, lock = threading.Event(), [], threading.Lock()

    def client(number):
        session = requests.Session()
        while not stop.is_set():
            prompt = prompts[number]
            sent = time.monotonic()
            answer = session.post(f"{url}/mii/fault", json={"prompts": prompt, "max_new_tokens": FAULT_TOKENS, **GREEDY},
                                  timeout=120)
            with lock:
                outcomes.append((sent, answer.status_code, answer.json(), prompt))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    wait_until(lambda: len(outcomes) >= 16, timeout=120, what="the load to run")
    # more prompts in flight at replica 1 than its 4 sequences: some it has not started, which the router must
    # send on (a loaded 2-core machine once killed it holding only started ones: nothing to reroute)
    wait_until(lambda: fault.health()["replicas"][1]["outstanding"] > 5, timeout=60,
               what="replica 1 to hold requests it has not started")
    victim = fault.health()["replicas"][1]["pid"]
    killed = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: not fault.health()["replicas"][1]["alive"], timeout=5, what="the router to notice")
    noticed = time.monotonic() - killed
    time.sleep(2.0)  # the load goes on against the one replica left
    stop.set()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a client hung"

    lost = [o for o in outcomes if o[1] != 200]
    assert all(o[1] == 503 and "replica 1 was lost while running this request" in o[2]["error"]["message"] for o in lost), lost
    assert len(lost) <= 4, "only requests running on the killed replica (at most 4) may fail"
    assert all(o[2] == expected[o[3]] for o in outcomes if o[1] == 200), "a wrong answer"
    after = [o for o in outcomes if o[0] > killed + noticed]
    assert after and all(o[1] == 200 for o in after), "the deployment keeps serving on the live replica"
    health = fault.health()
    assert (health["status"], health["replicas_alive"]) == ("degraded", 1)
    assert "exited with code -9" in health["replicas"][1]["lost_reason"]
    assert health["rerouted"] >= 1, "requests the killed replica had not started go to the other one"
    print(f"\nSIGKILL replica 1 under 16 clients: noticed in {noticed:.2f} s; {len(outcomes)} requests, "
          f"{len(outcomes) - len(lost)} answered right, {len(lost)} ended with 'replica lost' (503), "
          f"{health['rerouted']} re-routed unstarted, 0 hung; {len(after)} requests after the kill all answered")


def test_terminate_under_load_ends_every_process_and_frees_every_port(fault, checkpoint, oracle):
    url = rest_url(fault)
    record = fault.record
    pids = [record.router_pid, *record.replica_pids]
    ports = [p for _, p in record.front_ends.values()] + [p for _, p in record.replica_links] + [record.router_link[1]]
    outcomes, lock, stop = [], threading.Lock(), threading.Event()

    def client(number):
        session = requests.Session()
        while not stop.is_set():
            try:
                answer = session.post(f"{url}/mii/fault", json={"prompts": "river", "max_new_tokens": 30, **GREEDY},
                                      timeout=60)
                result = answer.status_code
            except requests.ConnectionError:
                result = "connection closed"
            with lock:
                outcomes.append(result)
            if result != 200:
                return

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    wait_until(lambda: len(outcomes) >= 8, timeout=120, what="the load to run")
    started = time.monotonic()
    fault.terminate_server()
    took = time.monotonic() - started
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a client hung"
    assert not any(pid_alive(pid) for pid in pids)
    assert all(port_free(port) for port in ports)
    assert processes_mentioning(record.folder) == []  # no orphan
    assert set(outcomes) <= {200, 503, "connection closed"}
    print(f"\nTERMINATE under 8 clients: every process gone and every port free {took:.2f} s after "
          f"terminate_server(); {outcomes.count(200)} answered, {len(outcomes) - outcomes.count(200)} refused or cut")


def test_chat_on_a_model_without_a_template_is_a_400_naming_the_option(guarded):
    url = rest_url(guarded)
    answer = requests.post(f"{url}/v1/chat/completions", headers=AUTH, timeout=60,
                           json={"model": "guarded", "messages": [{"role": "user", "content": "river"}]})
    assert answer.status_code == 400 and "chat_template" in answer.json()["error"]["message"]
    tokenized = requests.post(f"{url}/tokenize", headers=AUTH, timeout=60,
                              json={"messages": [{"role": "user", "content": "river"}]})
    assert tokenized.status_code == 400 and "chat_template" in tokenized.json()["error"]["message"]
