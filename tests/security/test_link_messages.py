"""The deployment link carries msgpack of a checked shape, never pickles (issue 22, row 1).

Real link servers and forged peers on 127.0.0.1; a forged peer knows the key (as a planted record
would give it) and sends pickles or malformed messages: nothing runs, the other side refuses cleanly.
"""
from __future__ import annotations

import os
import pickle
import threading
from multiprocessing.connection import Client, Listener

import msgpack
import pytest

from mii_core.response import Response
from mii_core.serving.backend import STARTED, Backend, Chunk, GenerateRequest, ResponseStream
from mii_core.serving.errors import InvalidRequest
from mii_core.serving.link import BadPeer, LinkServer, RemoteBackend, backend_handler

KEY = b"k" * 32
HOST = "127.0.0.1"


class Planted:
    """A pickle that creates a file when unpickled: proof that code ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


class EchoBackend(Backend):
    """Answers each prompt with its reversal (worked out by hand in the tests)."""

    def submit(self, request: GenerateRequest) -> ResponseStream:
        if request.options.get("top_k") == -1:
            raise InvalidRequest("top_k must be positive")
        return EchoStream([Response(p[::-1], len(p), len(p), "length") for p in request.prompts])

    def health(self):
        return {"status": "ok", "replicas": [1, 2]}

    def terminate(self):
        pass


class EchoStream(ResponseStream):
    def __init__(self, responses):
        self._answers = responses

    def events(self, poll_interval=None):
        yield STARTED
        for index, response in enumerate(self._answers):
            yield Chunk(index, response)
        self.responses = self._answers

    def cancel(self):
        pass


@pytest.fixture
def echo_server():
    server = LinkServer(HOST, 0, KEY, backend_handler(EchoBackend()), "echo").start()
    yield server.address
    server.close()


def forged_server(replies: list[bytes]):
    """A listener that knows KEY and answers one connection with raw byte messages; returns its address."""
    listener = Listener((HOST, 0), authkey=KEY)

    def answer():
        with listener.accept() as conn:
            conn.recv_bytes()
            for reply in replies:
                conn.send_bytes(reply)
        listener.close()

    threading.Thread(target=answer, daemon=True).start()
    return listener.address


def test_a_request_round_trips_as_plain_data(echo_server):
    remote = RemoteBackend(echo_server, KEY)
    assert remote.submit(GenerateRequest(prompts=["abc", "hello"])).result() == [
        Response("cba", 3, 3, "length"), Response("olleh", 5, 5, "length")]
    assert remote.health() == {"status": "ok", "replicas": [1, 2]}


def test_an_error_travels_with_its_kind(echo_server):
    with pytest.raises(InvalidRequest, match="top_k must be positive"):
        RemoteBackend(echo_server, KEY).submit(GenerateRequest(prompts=["x"], options={"top_k": -1})).result()


def test_a_pickled_reply_is_refused_and_does_not_run(tmp_path):
    proof = tmp_path / "pwned"
    address = forged_server([pickle.dumps(("done", [Planted(str(proof))]))])
    with pytest.raises(BadPeer, match="not a msgpack message"):
        RemoteBackend(address, KEY).submit(GenerateRequest(prompts=["x"])).result()
    assert not proof.exists()


def test_a_pickled_request_is_refused_and_does_not_run(echo_server, tmp_path):
    proof = tmp_path / "pwned"
    with Client(echo_server, authkey=KEY) as conn:
        conn.send_bytes(pickle.dumps({"op": "generate", "prompts": [Planted(str(proof))]}))
        assert msgpack.unpackb(conn.recv_bytes())[:2] == ["error", "invalid"]
    assert not proof.exists()
    assert RemoteBackend(echo_server, KEY).health()["status"] == "ok"  # still serving


MALFORMED_REPLIES = [
    b"\xc1",  # a byte msgpack never uses
    msgpack.packb("done"),
    msgpack.packb([]),
    msgpack.packb(["chunk", "0", {"generated_text": "x"}]),
    msgpack.packb(["chunk", 0, {"generated_text": 1, "prompt_length": 1, "generated_length": 1,
                                "finish_reason": "none"}]),
    msgpack.packb(["chunk", 0, {"generated_text": "x", "prompt_length": 1, "generated_length": 1,
                                "finish_reason": "none", "extra": 1}]),
    msgpack.packb(["done", {"not": "a list"}]),
    msgpack.packb(["error", 1, 2]),
    msgpack.packb(["surprise", 1]),
    msgpack.packb(msgpack.ExtType(5, b"payload")),
    b"\x91" * 5000 + b"\xc0",  # arrays nested 5,000 deep
]


@pytest.mark.parametrize("reply", MALFORMED_REPLIES, ids=range(len(MALFORMED_REPLIES)))
def test_a_malformed_reply_is_refused_cleanly(reply):
    address = forged_server([msgpack.packb(["started"]), reply])
    with pytest.raises(BadPeer):
        RemoteBackend(address, KEY).submit(GenerateRequest(prompts=["x"])).result()


@pytest.mark.parametrize("request_message", [{"op": "unpickle"}, ["generate"], "generate", {"op": 5}])
def test_a_malformed_request_is_answered_invalid_and_the_server_keeps_serving(echo_server, request_message):
    with Client(echo_server, authkey=KEY) as conn:
        conn.send_bytes(msgpack.packb(request_message))
        kind, error_kind, message = msgpack.unpackb(conn.recv_bytes())
    assert (kind, error_kind) == ("error", "invalid")
    assert RemoteBackend(echo_server, KEY).submit(GenerateRequest(prompts=["ab"])).result()[0].generated_text == "ba"


def test_a_wrong_key_is_refused_without_a_traceback(echo_server, caplog):
    from multiprocessing import AuthenticationError

    with pytest.raises(AuthenticationError):
        Client(echo_server, authkey=b"wrong" * 8)
    assert RemoteBackend(echo_server, KEY).health()["status"] == "ok"
    assert not any(record.exc_info for record in caplog.records)


def test_objects_that_are_not_plain_data_are_not_sent(echo_server):
    with pytest.raises(TypeError, match="cannot send a object"):
        RemoteBackend(echo_server, KEY).submit(GenerateRequest(prompts=["x"], options={"a": object()}))


def test_connections_that_never_finish_the_handshake_are_ended_and_free_their_threads(monkeypatch):
    """Issue 22: each silent connection held a thread forever (300 connections, 300 threads)."""
    import socket
    import time

    from mii_core.serving import link

    monkeypatch.setattr(link, "HANDSHAKE_SECONDS", 0.5)
    server = LinkServer(HOST, 0, KEY, backend_handler(EchoBackend()), "echo").start()
    threads_before = threading.active_count()
    silent = [socket.create_connection(server.address) for _ in range(50)]
    try:
        time.sleep(0.3)
        assert threading.active_count() >= threads_before + 50, "each connection is served by a thread"
        for sock in silent:
            sock.settimeout(5)
            while sock.recv(4096):  # the server's challenge, then the end of the connection
                pass
        deadline = time.monotonic() + 5
        while threading.active_count() > threads_before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert threading.active_count() <= threads_before, "every silent connection's thread has ended"
        remote = RemoteBackend(server.address, KEY)  # and the server still answers
        assert remote.submit(GenerateRequest(prompts=["ab"])).result() == [Response("ba", 2, 2, "length")]
    finally:
        for sock in silent:
            sock.close()
        server.close()
