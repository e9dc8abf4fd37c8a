"""The seed's tensor-parallel deployment on CPU: ``serve(path, tensor_parallel=2, replica_num=2)``, each
replica launched through the deepspeed launcher as 2 gloo ranks (4 rank processes in all). It answers
as the TP=1 pipeline does (and HF), streams, reports a replica that loses a rank by replica and rank in
bounded time, and terminate ends every rank. The tests share one deployment and run in file order:
the rank loss takes replica 1 down, terminate ends the rest."""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from support.compare import assert_responses_match
from support.prompts import MIXED_PROMPTS
from support.serving import SMALL_KV, free_port_block, pid_alive, port_free, wait_until

GREEDY = dict(do_sample=False, ignore_eos=True)
LOSS_REPORT_SECONDS = 15  # a request on a replica that lost a rank must end (with the error) within this


def _rendezvous_port(taken: range) -> int:
    """A torch_dist_port whose replica-1 port (+100, MII's rule) is free too, neither of them in ``taken`` (the
    deployment's own block: a rendezvous there collided with the router's client link once, 2026-12-04)."""
    while True:
        port = free_port_block(1)
        if port + 100 < 65536 and port_free(port + 100) and port not in taken and port + 100 not in taken:
            return port


@pytest.fixture(scope="module")
def tp_deployment(checkpoint, oracle, pipeline):
    import mii_core

    path = checkpoint("gqa")
    # a name of its own: test_deployment's README-style deployment of the same checkpoint takes the default
    # name, and both may be up in one pytest process
    base = free_port_block(8)
    client = mii_core.serve(str(path), deployment_name="tp-gqa", tensor_parallel=2, replica_num=2, transports=[],
                            port_number=base, torch_dist_port=_rendezvous_port(range(base, base + 8)),
                            inference_engine_config=SMALL_KV)
    yield client, path, oracle(path), pipeline(path, inference_engine_config=SMALL_KV)
    try:
        client.terminate_server(timeout=20)
    except Exception:
        pass
    for replica in client.record.replica_pids or []:
        _kill_group(replica)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _rank_pids(client) -> list[list[int]]:
    return [r["rank_pids"] for r in client.health()["replicas"]]


def test_each_replica_runs_two_ranks(tp_deployment):
    client, *_ = tp_deployment
    ranks = _rank_pids(client)
    assert len(ranks) == 2 and all(len(r) == 2 for r in ranks)
    assert len({pid for r in ranks for pid in r}) == 4 and all(pid_alive(p) for r in ranks for p in r)


def test_tp_deployment_answers_as_the_tp1_pipeline(tp_deployment):
    client, _path, hf, tp1 = tp_deployment
    responses = client.generate(MIXED_PROMPTS, max_new_tokens=16, **GREEDY)
    expected = tp1(MIXED_PROMPTS, max_new_tokens=16, **GREEDY)
    assert [r.generated_text for r in responses] == [r.generated_text for r in expected]
    assert_responses_match(responses, [hf.greedy(p, 16, ignore_eos=True) for p in MIXED_PROMPTS])
    # concurrent requests spread over both replicas, each answering right
    results = {}

    def ask(i: int) -> None:
        results[i] = client.generate(MIXED_PROMPTS[i], max_new_tokens=16, **GREEDY)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [results[i][0].generated_text for i in range(4)] == [r.generated_text for r in expected[:4]]
    assert all(r["served"] > 0 for r in client.health()["replicas"])


def test_streaming_under_tp_adds_up_to_the_text(tp_deployment):
    client, _path, hf, _tp1 = tp_deployment
    pieces = []
    result = client.generate("The old man", streaming_fn=pieces.append, max_new_tokens=24, **GREEDY)
    assert "".join(p[0].generated_text for p in pieces) == result[0].generated_text
    assert result[0].generated_text == hf.greedy("The old man", 24, ignore_eos=True).text
    # how many pieces depends on timing (a router behind its replica joins waiting chunks); their counts grow
    lengths = [p[0].generated_length for p in pieces]
    assert lengths == sorted(lengths) and lengths[-1] == 24 and pieces[-1][0].finish_reason == "length"


def test_a_replica_that_loses_a_rank_reports_it(tp_deployment):
    client, *_ = tp_deployment
    ranks = _rank_pids(client)
    outcomes: dict[int, object] = {}
    ended: dict[int, float] = {}
    started = [threading.Event(), threading.Event()]

    def long_request(i: int) -> None:
        try:
            outcomes[i] = client.generate(f"request {i} is", streaming_fn=lambda _p: started[i].set(),
                                          max_new_tokens=400, **GREEDY)
        except Exception as exc:  # noqa: BLE001 - the error is what this test checks
            outcomes[i] = exc
            ended[i] = time.monotonic()

    threads = [threading.Thread(target=long_request, args=(i,), daemon=True) for i in (0, 1)]
    for thread in threads:
        thread.start()
    assert all(event.wait(60) for event in started), "the long requests did not start"
    assert [r["outstanding"] for r in client.health()["replicas"]] == [1, 1]  # one on each replica
    killed_at = time.monotonic()
    os.kill(ranks[1][1], signal.SIGKILL)  # replica 1 loses its rank 1
    for thread in threads:
        thread.join(timeout=LOSS_REPORT_SECONDS + 60)
    assert not any(thread.is_alive() for thread in threads), "a request hung after the rank was lost"
    failed = [o for o in outcomes.values() if isinstance(o, Exception)]
    assert len(failed) == 1, outcomes  # the other replica's request finished
    message = str(failed[0])
    seconds = max(ended.values()) - killed_at
    print(f"\nrank killed; its replica's request ended {seconds:.2f} s later with: {message[:160]}")
    assert seconds < LOSS_REPORT_SECONDS
    assert "replica 1" in message and "rank 1" in message, message
    health = wait_until(lambda: (h := client.health())["replicas_alive"] == 1 and h, timeout=LOSS_REPORT_SECONDS,
                        what="health to report the lost replica")
    assert time.monotonic() - killed_at < LOSS_REPORT_SECONDS + 5
    lost = health["replicas"][1]
    assert not lost["alive"] and f"rank 1 of 2 (pid {ranks[1][1]})" in lost["lost_reason"], lost
    assert health["status"] == "degraded"
    # what was left of replica 1 ends; replica 0 keeps serving
    wait_until(lambda: not pid_alive(ranks[1][0]), timeout=30, what="replica 1's rank 0 to end")
    assert client.generate("Seattle is", max_new_tokens=8, **GREEDY)[0].generated_length == 8


def test_terminate_ends_every_rank(tp_deployment):
    client, *_ = tp_deployment
    ranks = [pid for r in _rank_pids(client) for pid in r]
    launchers = client.record.replica_pids
    client.terminate_server(timeout=30)
    wait_until(lambda: not any(pid_alive(p) for p in ranks + launchers), timeout=30,
               what="every rank and launcher to exit")
