"""One user's bad request never hurts another's (issue 22): a victim streams a long greedy answer while
every class of rejected input is sent beside it; each is refused with a JSON 4xx and the victim's text
equals its greedy reference. Against the shared demo deployment (no API key)."""
from __future__ import annotations

import http.client
import json
import threading

import requests

from support.compare import reference_fields

VICTIM = {"prompts": ["river"], "max_new_tokens": 100, "do_sample": False, "ignore_eos": True}


def rejected_inputs(port: int) -> list[tuple[str, str, bytes, dict]]:
    """(what, path, body, headers) of each class of input the front end refuses."""
    json_type = {"Content-Type": "application/json", "Host": f"localhost:{port}"}
    body = json.dumps
    return [
        ("malformed JSON", "/mii/demo", b'{"prompts": [', json_type),
        ("nested 1,000 levels", "/mii/demo", b'{"prompts": ' + b"[" * 1000 + b"]" * 1000 + b"}", json_type),
        ("top_k past int64", "/mii/demo", body({"prompts": ["x"], "top_k": 2**63}).encode(), json_type),
        ("temperature float32 cannot hold", "/mii/demo",
         body({"prompts": ["x"], "temperature": 1e308, "top_k": 1}).encode(), json_type),
        ("too many stop strings", "/mii/demo", body({"prompts": ["x"], "stop": ["s"] * 65}).encode(), json_type),
        ("a prompt too long to fit", "/mii/demo", body({"prompts": ["the " * 300_000]}).encode(), json_type),
        ("an unknown option", "/mii/demo", body({"prompts": ["x"], "bogus": 1}).encode(), json_type),
        ("no prompts", "/mii/demo", b"{}", json_type),
        ("a text/plain body", "/mii/demo", body({"prompts": ["x"]}).encode(), {**json_type, "Content-Type": "text/plain"}),
        ("a rebound Host", "/mii/demo", body({"prompts": ["x"]}).encode(), {**json_type, "Host": "evil.example"}),
        ("response_format not an object", "/v1/chat/completions",
         body({"model": "demo", "messages": [{"role": "user", "content": "x"}], "response_format": "json"}).encode(),
         json_type),
        ("a chat without messages", "/v1/chat/completions", body({"model": "demo"}).encode(), json_type),
        ("n=2 with the largest seed", "/v1/completions",
         body({"model": "demo", "prompt": "x", "n": 2, "seed": 2**64, "max_tokens": 2}).encode(), json_type),
    ]


def send(port: int, path: str, data: bytes, headers: dict) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.putrequest("POST", path, skip_host=True)
    for name, value in headers.items():
        connection.putheader(name, value)
    connection.putheader("Content-Length", str(len(data)))
    connection.endheaders(data)
    response = connection.getresponse()
    return response.status, response.read()


def test_a_victims_stream_is_untouched_by_every_rejected_input_beside_it(demo, chat_checkpoint, oracle):
    port = demo.record.front_ends["rest"][1]
    reference = reference_fields(oracle(chat_checkpoint).greedy("river", 100, ignore_eos=True))
    pieces, started = [], threading.Event()

    def victim() -> None:
        with requests.post(f"http://localhost:{port}/mii/demo", json={**VICTIM, "stream": True}, stream=True,
                           timeout=120) as stream:
            for line in stream.iter_lines():
                if line.startswith(b"data: ") and line != b"data: [DONE]":
                    started.set()
                    pieces.append(json.loads(line[6:]))

    thread = threading.Thread(target=victim)
    thread.start()
    assert started.wait(60), "the victim's stream started"
    for what, path, data, headers in rejected_inputs(port):
        status, body = send(port, path, data, headers)
        assert 400 <= status < 500, (what, status, body[:200])
        assert {"message", "type", "code"} <= set(json.loads(body)["error"]), what
    thread.join(timeout=120)
    assert "".join(piece["generated_text"] for piece in pieces) == reference["generated_text"]
    answer = requests.post(f"http://localhost:{port}/mii/demo", json=VICTIM, timeout=60).json()
    assert answer == [reference], "and the next request is served as before"
