"""A replica's streamed generations are sent by one pump thread (not a thread per request), and a router
reading behind its replica joins the chunks already waiting into one (mii_core/serving/stream_pump.py,
link.RemoteStream): both over a real link server on loopback, with a scripted backend in place of the engine."""
from __future__ import annotations

import queue
import threading
import time
from multiprocessing import Pipe

import pytest

# an exception in the pump's thread while a test runs (the requests would never see it) fails that test
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")

from mii_core.response import Response
from mii_core.serving.backend import STARTED, Backend, Chunk, GenerateRequest, ResponseStream
from mii_core.serving.errors import InvalidRequest
from mii_core.serving.link import LinkServer, RemoteBackend, RemoteStream, backend_handler, connect, send, wire

KEY = b"p" * 32


class ScriptedStream(ResponseStream):
    """Posts STARTED, then one chunk per word of ``words`` from a thread of its own (as the engine's loop
    thread posts), waking its watcher after each; ``fail`` raises instead of the last word."""

    def __init__(self, words: list[str], gap_s: float, fail: bool = False) -> None:
        self.words, self.gap_s, self.fail = words, gap_s, fail
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.cancelled = threading.Event()
        self.readers: set[str] = set()  # the threads that read this stream's events
        self.wake = None
        self.responses = None

    def watch(self, wake) -> bool:
        self.wake = wake
        return True

    def post(self) -> None:
        for item in [STARTED, *self.words, None]:
            if self.cancelled.is_set():
                return
            self.queue.put(item)
            if self.wake is not None:
                self.wake()
            time.sleep(self.gap_s)

    def cancel(self) -> None:
        self.cancelled.set()

    def events(self, poll_interval=None):
        count = 0
        while True:
            self.readers.add(threading.current_thread().name)
            try:
                item = self.queue.get(timeout=poll_interval)
            except queue.Empty:
                yield None
                continue
            if item is None:
                break
            if item == STARTED:
                yield STARTED
                continue
            count += 1
            if self.fail and count == len(self.words):
                raise InvalidRequest("scripted failure")
            yield Chunk(0, Response(item, 1, count, "none"))
        self.responses = [Response("".join(self.words), 1, count, "length")]


class ScriptedBackend(Backend):
    def __init__(self, gap_s: float = 0.001) -> None:
        self.gap_s, self.streams = gap_s, []

    def submit(self, request):
        prompt = request.prompts[0]
        words = list(prompt) if prompt != "flood" else ["x" * 1024] * 20_000  # 20 MB: more than socket buffers hold
        gap_s = 0.2 if prompt == "slow" else 0.0 if prompt == "flood" else self.gap_s
        stream = ScriptedStream(words, gap_s, fail=prompt == "fails")
        self.streams.append(stream)
        threading.Thread(target=stream.post, daemon=True).start()
        return stream

    def health(self):
        return {"status": "ok"}

    def terminate(self):
        pass


@pytest.fixture
def served():
    backend = ScriptedBackend()
    server = LinkServer("127.0.0.1", 0, KEY, backend_handler(backend, "scripted"), "scripted").start()
    yield backend, RemoteBackend(server.address, KEY)
    server.close()


def streamed_text(remote: RemoteBackend, prompt: str) -> tuple[str, list]:
    stream = remote.submit(GenerateRequest(prompts=[prompt], stream=True))
    text = "".join(e.response.generated_text for e in stream.events() if isinstance(e, Chunk))
    return text, stream.responses


def test_many_concurrent_streams_arrive_whole_and_in_order_all_read_by_the_pump_thread(served):
    backend, remote = served
    prompts = [f"request {i:02d} says hello" for i in range(40)]
    results: dict = {}
    threads = [threading.Thread(target=lambda p=p: results.__setitem__(p, streamed_text(remote, p)))
               for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for prompt in prompts:
        text, responses = results[prompt]
        assert text == prompt and responses[0].generated_text == prompt
        assert responses[0].generated_length == len(prompt)
    readers = set().union(*(s.readers for s in backend.streams))
    assert readers == {"scripted-pump"}  # no request's own thread read its stream


def test_the_next_request_on_a_kept_connection_is_served_after_the_last_one_ended(served):
    """At once: the request's thread learns of its stream's end from the pump, not from a timeout (each of
    these takes milliseconds; a thread that looked once a second made each take a second)."""
    _, remote = served
    started = time.monotonic()
    for i in range(5):
        assert streamed_text(remote, f"round {i}")[0] == f"round {i}"
    assert time.monotonic() - started < 2.5


def test_a_caller_leaving_mid_stream_cancels_its_request_and_others_go_on(served):
    backend, remote = served
    stream = remote.submit(GenerateRequest(prompts=["slow"], stream=True))
    events = stream.events()
    assert next(events) == STARTED
    events.close()  # the caller leaves: the link connection closes
    slow = backend.streams[-1]
    assert slow.cancelled.wait(5)
    assert streamed_text(remote, "still served")[0] == "still served"


def test_a_stream_that_fails_reaches_the_caller_as_its_error(served):
    _, remote = served
    with pytest.raises(InvalidRequest, match="scripted failure"):
        streamed_text(remote, "fails")
    assert streamed_text(remote, "after")[0] == "after"


def piece(text, length, logprobs=None, prompt_logprobs=None, finish="none"):
    return Response(text, 3, length, finish, logprobs=logprobs, prompt_logprobs=prompt_logprobs,
                    prompt_token_ids=[1, 2, 3] if prompt_logprobs is not None else None)


def test_chunks_waiting_behind_one_another_are_joined_per_prompt():
    """Everything is sent before the reader reads: prompt 0's own piece (its prompt logprobs) stays apart,
    its next three pieces become one, prompt 1's piece and prompt 0's last stay apart (joining never
    reorders), then the done message."""
    reader, writer = Pipe()
    prompt_piece = piece("", 0, prompt_logprobs=[None, {"logprob": -2.0}])
    pieces = [(0, prompt_piece), (0, piece("He", 1, [{"logprob": -1.0}])),
              (0, piece("llo", 2, [{"logprob": -0.5}])), (0, piece(",", 3, None)),
              (1, piece("Hi", 1)), (0, piece("!", 4, finish="length"))]
    send(writer, ["started"])
    for index, response in pieces:
        send(writer, ["chunk", index, wire.response_to_wire(response)])
    send(writer, ["done", [wire.response_to_wire(piece("Hello,!", 4, finish="length"))]])
    events = list(RemoteStream(reader).events())
    assert events[0] == STARTED
    got = [(e.index, e.response) for e in events[1:]]
    joined = Response("Hello,", 3, 3, "none", logprobs=[{"logprob": -1.0}, {"logprob": -0.5}])
    assert got == [(0, prompt_piece), (0, joined), (1, piece("Hi", 1)), (0, piece("!", 4, finish="length"))]


def test_a_caller_that_stops_reading_holds_back_only_its_own_stream(served):
    """A caller that sends a request and never reads its answer fills its socket buffers; the pump then skips
    its stream (not writable) instead of blocking in a send, so every other request is still served."""
    backend, remote = served
    stalled = connect(remote.address, KEY)
    send(stalled, GenerateRequest(prompts=["flood"], stream=True).to_wire())
    try:
        deadline, last = time.monotonic() + 20, None
        while time.monotonic() < deadline:  # until the pump has taken what the buffers hold of the flood
            time.sleep(0.3)
            left = backend.streams[0].queue.qsize() if backend.streams else None
            if left is not None and left == last:
                break
            last = left
        answers = queue.Queue()
        threads = [threading.Thread(target=lambda i=i: answers.put(streamed_text(remote, f"other {i}")[0]),
                                    daemon=True) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert sorted(answers.get_nowait() for _ in range(answers.qsize())) == sorted(f"other {i}" for i in range(8))
    finally:
        stalled.close()
    flood = backend.streams[0]
    assert flood.cancelled.wait(10)  # its caller closed: the request is cancelled


def test_if_the_pump_itself_fails_each_caller_hears_an_error_and_the_next_request_is_served(served, monkeypatch):
    """A bug in the pump (here: its pass raising once) must not leave a request without an answer."""
    from mii_core.serving import stream_pump

    backend, remote = served
    real_pump, calls = stream_pump.PumpedStream.pump, []

    def pump_failing_once(self):
        if self.stream.words == list("doomed") and not calls:
            calls.append(self)
            raise RuntimeError("a bug")
        return real_pump(self)

    monkeypatch.setattr(stream_pump.PumpedStream, "pump", pump_failing_once)
    outcome = queue.Queue()

    def caller():
        try:
            outcome.put(streamed_text(remote, "doomed"))
        except Exception as exc:
            outcome.put(exc)

    threading.Thread(target=caller, daemon=True).start()
    answer = outcome.get(timeout=20)  # queue.Empty here: the caller was left without an answer
    assert isinstance(answer, Exception) and "stream pump failed: a bug" in str(answer)
    monkeypatch.setattr(stream_pump.PumpedStream, "pump", real_pump)
    assert streamed_text(remote, "served after")[0] == "served after"
