"""A client that disconnects from a non-streamed request cancels it (issue 22, row 8): its sequences stop
at once instead of running to the end for nobody. Against the shared demo deployment."""
from __future__ import annotations

import http.client
import json
import time

from support.serving import wait_until

# 256 sequences of 480 tokens, EOS ignored: far more than the KV cache holds at once, so the request runs for
# many seconds (64 such sequences ended in 3.2 s on an idle 2-core machine, which a loaded CI run's cancel
# could lose to: the request must outlast the cancel by a wide margin for the test to mean anything)
PROMPTS = 256
LONG = {"do_sample": False, "ignore_eos": True, "max_new_tokens": 480}


def engines(client) -> list[dict]:
    return [replica["engine"] for replica in client.health()["replicas"]]


def leave_once_running(client, port: int, path: str, body: dict) -> None:
    """Sends a non-streamed request, waits until a replica runs its sequences, then closes the connection."""
    connection = http.client.HTTPConnection("localhost", port, timeout=30)
    connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    wait_until(lambda: any(e.get("running", 0) > 0 for e in engines(client)), timeout=30,
               what=f"a replica to run the {path} request")
    connection.close()


def test_a_non_streamed_request_is_cancelled_when_its_client_leaves(demo):
    port = demo.record.front_ends["rest"][1]
    for path, body in (("/mii/demo", {"prompts": ["river"] * PROMPTS, **LONG}),
                       ("/v1/completions", {"model": "demo", "prompt": ["river"] * PROMPTS, "max_tokens": 480,
                                            "temperature": 0, "ignore_eos": True})):
        cancelled_before = sum(e.get("cancelled", 0) for e in engines(demo))
        wait_until(lambda: all(e.get("running") == 0 for e in engines(demo)), timeout=30, what="an idle engine")
        leave_once_running(demo, port, path, body)
        left = time.monotonic()
        # only a cancel, not an end, can free them this soon
        wait_until(lambda: sum(e.get("cancelled", 0) for e in engines(demo)) > cancelled_before, timeout=10,
                   what=f"the replica to cancel the abandoned {path} request")
        wait_until(lambda: all(e.get("running") == 0 for e in engines(demo)), timeout=10,
                   what="its sequences to leave the batch")
        assert time.monotonic() - left < 10
