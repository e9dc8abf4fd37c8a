"""A client that disconnects from a non-streamed request cancels it (issue 22, row 8): its sequences stop
at once instead of running to the end for nobody. Against the shared demo deployment."""
from __future__ import annotations

import http.client
import json
import time

from support.serving import wait_until

LONG = {"do_sample": False, "ignore_eos": True, "max_new_tokens": 480}


def engines(client) -> list[dict]:
    return [replica["engine"] for replica in client.health()["replicas"]]


def leave_after(port: int, path: str, body: dict, seconds: float) -> None:
    """Sends a non-streamed request, waits ``seconds`` for nothing, then closes the connection."""
    connection = http.client.HTTPConnection("localhost", port, timeout=30)
    connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    time.sleep(seconds)
    connection.close()


def test_a_non_streamed_request_is_cancelled_when_its_client_leaves(demo):
    port = demo.record.front_ends["rest"][1]
    for path, body in (("/mii/demo", {"prompts": ["river"] * 64, **LONG}),
                       ("/v1/completions", {"model": "demo", "prompt": ["river"] * 64, "max_tokens": 480,
                                            "temperature": 0})):
        cancelled_before = sum(e.get("cancelled", 0) for e in engines(demo))
        wait_until(lambda: all(e.get("running") == 0 for e in engines(demo)), timeout=30, what="an idle engine")
        leave_after(port, path, body, seconds=1.0)
        left = time.monotonic()
        # 64 sequences of 480 tokens run for many seconds on this machine: a cancel, not an end, frees them
        wait_until(lambda: sum(e.get("cancelled", 0) for e in engines(demo)) > cancelled_before, timeout=10,
                   what=f"the replica to cancel the abandoned {path} request")
        wait_until(lambda: all(e.get("running") == 0 for e in engines(demo)), timeout=10,
                   what="its sequences to leave the batch")
        assert time.monotonic() - left < 10
