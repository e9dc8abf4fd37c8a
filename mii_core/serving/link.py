"""The deployment's own wire: router ↔ replicas and Python clients ↔ router, over loopback TCP.

Built on :mod:`multiprocessing.connection`'s framing (length-prefixed byte messages, an HMAC challenge
on both sides keyed by the deployment's secret authkey) but never its pickles: every message is msgpack
of a checked shape (:mod:`mii_core.serving.wire`), so a peer that knows a key (another user's planted
record, say) can at worst send a malformed message, which is refused. One request at a time per
connection: the caller sends one message, the server answers with ``["started"]``, ``["chunk", index,
response]``…, then ``["done", payload]`` or ``["error", kind, message]``. A caller that goes away closes its
connection; the server notices on its next send or poll and cancels the request. A connection whose
request ended with ``done`` or ``error`` is kept (the caller's ``ConnectionPool``) and carries the caller's
next request: a short request (a legacy task query, a health check) then costs two messages, not a TCP
connect, two HMAC challenges and two server threads.
"""
from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import threading
from multiprocessing import AuthenticationError
from multiprocessing.connection import Connection, Listener, answer_challenge, deliver_challenge
from typing import Any, Callable, Iterator, Optional

from mii_core.serving import wire
from mii_core.serving.backend import STARTED, Backend, Chunk, GenerateRequest, Request, ResponseStream, TaskQuery
from mii_core.serving.errors import RequestCancelled, error_from_wire, error_kind
from mii_core.serving.stream_pump import PumpedStream, StreamPump

log = logging.getLogger(__name__)
POLL_SECONDS = 0.1  # how often a waiting side checks its peer and its cancel flag
BACKLOG = 512
# A connection must complete the HMAC handshake and send its request within this long, else it is ended:
# a peer that connects and says nothing holds its thread no longer.
HANDSHAKE_SECONDS = 10.0
CONNECT_SECONDS = 10.0  # a TCP connect left unanswered this long: the peer is unreachable


class LinkBroken(ConnectionError):
    """The peer went away (process died, connection refused or closed)."""


class BadPeer(LinkBroken):
    """The peer sent a message that is not of the link's shapes: treated as a broken peer."""


def send(conn: Connection, message: Any) -> None:
    conn.send_bytes(wire.encode(message))


def receive(conn: Connection) -> Any:
    """The next message, decoded (plain data only); BadPeer when it is not msgpack."""
    data = conn.recv_bytes(wire.MAX_MESSAGE_BYTES)
    try:
        return wire.decode(data)
    except wire.MalformedMessage as exc:
        raise BadPeer(str(exc)) from None


def receive_reply(conn: Connection) -> list[Any]:
    try:
        return wire.check_reply(receive(conn))
    except wire.MalformedMessage as exc:
        raise BadPeer(str(exc)) from None


class LinkServer:
    """Accepts connections on (host, port); each is handled in its own thread by ``handle``."""

    def __init__(self, host: str, port: int, authkey: bytes,
                 handle: Callable[[Connection, dict[str, Any]], None], name: str = "link") -> None:
        # The handshake runs in each connection's thread, not in accept(), so a slow peer blocks no one.
        self._listener = Listener((host, port), backlog=BACKLOG)
        self._authkey, self._handle, self._name = authkey, handle, name
        self._closed = False

    @property
    def address(self) -> tuple[str, int]:
        return self._listener.address

    def start(self) -> "LinkServer":
        threading.Thread(target=self._accept_loop, name=f"{self._name}-accept", daemon=True).start()
        return self

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                conn = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(conn,), name=f"{self._name}-conn", daemon=True).start()

    def _serve(self, conn: Connection) -> None:
        """The handshake and first request within HANDSHAKE_SECONDS, then each request the caller sends
        after the last one's end, until it closes the connection (or sends a malformed one)."""
        deadline = _end_unless_cancelled(conn, HANDSHAKE_SECONDS)
        try:
            _send_at_once(conn)
            deliver_challenge(conn, self._authkey)
            answer_challenge(conn, self._authkey)
            message = self._read_request(conn)
            deadline.cancel()
            while message is not None:
                self._handle(conn, message)
                message = self._read_request(conn)  # EOFError once the caller closes: the thread ends
        except AuthenticationError as exc:
            log.warning("%s: refused a connection without the deployment's key (%s)", self._name, exc)
        except (EOFError, OSError):
            pass  # the peer left (or said nothing in time)
        except Exception:
            log.exception("link request failed")
        finally:
            deadline.cancel()
            conn.close()

    def _read_request(self, conn: Connection) -> Optional[dict[str, Any]]:
        """The caller's request, or None after answering a malformed one with an ``invalid`` error."""
        try:
            return wire.check_request(receive(conn))
        except (BadPeer, wire.MalformedMessage) as exc:
            log.warning("%s: refused a malformed message: %s", self._name, exc)
            send(conn, ["error", "invalid", f"malformed link message: {exc}"])
            return None


def _send_at_once(conn: Connection) -> None:
    """TCP_NODELAY on ``conn``'s socket: a reply is several small messages in a row ("started", each chunk,
    "done"), and Nagle's algorithm would hold each one back until the peer acknowledged the one before,
    which the peer's delayed ACK defers by up to 40 ms."""
    with socket.socket(fileno=os.dup(conn.fileno())) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _end_unless_cancelled(conn: Connection, seconds: float) -> threading.Timer:
    """Shuts ``conn``'s socket down after ``seconds`` unless the returned timer is cancelled first; the
    shutdown wakes a thread blocked reading it (closing the descriptor would not)."""
    def end() -> None:
        with contextlib.suppress(OSError):
            with socket.socket(fileno=os.dup(conn.fileno())) as sock:
                sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(seconds, end)
    timer.daemon = True
    timer.start()
    return timer


def connect(address: tuple[str, int], authkey: bytes) -> Connection:
    """An authenticated connection (``multiprocessing.connection.Client``'s handshake), given up after
    CONNECT_SECONDS: a host that vanished (a replica on another machine) drops the connection attempt
    silently, and the kernel would retry it for minutes."""
    try:
        sock = socket.create_connection(address, timeout=CONNECT_SECONDS)
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # the request and the handshake go at once
        conn = Connection(sock.detach())
    except OSError as exc:
        raise LinkBroken(f"cannot reach {address[0]}:{address[1]}: {exc}") from None
    try:
        answer_challenge(conn, authkey)
        deliver_challenge(conn, authkey)
        return conn
    except (OSError, EOFError) as exc:
        conn.close()
        raise LinkBroken(f"cannot reach {address[0]}:{address[1]}: {exc}") from None
    except BaseException:
        conn.close()
        raise


def call(address: tuple[str, int], authkey: bytes, message: dict[str, Any], timeout: float = 30.0) -> Any:
    """One request, one answer (health, terminate)."""
    conn = connect(address, authkey)
    try:
        send(conn, message)
        if not conn.poll(timeout):
            raise LinkBroken(f"{address[0]}:{address[1]} did not answer within {timeout:.0f} s")
        reply = receive_reply(conn)
    except BadPeer:
        raise
    except (OSError, EOFError) as exc:
        raise LinkBroken(f"lost {address[0]}:{address[1]}: {exc}") from None
    finally:
        conn.close()
    if reply[0] == "error":
        raise error_from_wire(reply[1], reply[2])
    if reply[0] != "done":
        raise BadPeer(f"expected a done or error reply, got {reply[0]!r}")
    return reply[1]


# ---- serving a Backend over the link ----

def backend_handler(backend: Backend, name: str = "link") -> Callable[[Connection, dict[str, Any]], None]:
    pump = StreamPump(name)  # one thread sends every stream that can wake it (a replica's generations)

    def handle(conn: Connection, message: dict[str, Any]) -> None:
        op = message["op"]  # one of wire.OPS: checked on receipt
        if op == "generate":
            _serve_generate(conn, backend, GenerateRequest.from_wire(message), pump)
        elif op == "query":
            _serve_generate(conn, backend, TaskQuery.from_wire(message), pump)
        elif op == "health":
            send(conn, ["done", backend.health()])
        else:
            send(conn, ["done", None])
            backend.terminate()
    return handle


def _send_error(conn: Connection, exc: BaseException) -> None:
    send(conn, ["error", error_kind(exc), str(exc)])


def _done_payload(request: Request, responses: Any) -> Any:
    """What a finished stream's ``done`` carries: a generation's responses as dicts, a task's answer as is."""
    if isinstance(request, TaskQuery):
        return responses
    return [wire.response_to_wire(r) for r in responses]


def _read_done(request: Request) -> Callable[[Any], Any]:
    return wire.task_answer_from_wire if isinstance(request, TaskQuery) else wire.responses_from_wire


def _serve_generate(conn: Connection, backend: Backend, request: Request, pump: StreamPump) -> None:
    try:
        stream = backend.submit(request)
    except Exception as exc:
        _send_error(conn, exc)
        return
    if stream.watch(pump.wake):
        _pump_stream(conn, request, stream, pump)
    else:
        _send_stream(conn, request, stream)


def _send_event(conn: Connection, event: Any) -> None:
    if event == STARTED:
        send(conn, ["started"])
    else:
        send(conn, ["chunk", event.index, wire.response_to_wire(event.response)])


def _pump_stream(conn: Connection, request: Request, stream: ResponseStream, pump: StreamPump) -> None:
    """The pump sends the stream's events; this (the connection's) thread waits on the socket, which turns
    readable only if the caller closes it (it never sends twice during a request): a cancel. Once the pump is
    done, this thread sends the last message (``done`` or the error)."""
    pumped = PumpedStream(stream, lambda event: _send_event(conn, event), _writable_check(conn))
    pump.add(pumped)
    if not pumped.wait_end_or_caller(conn.fileno()):
        pumped.cancel()
        pump.wake()
    pumped.finished.wait()
    pumped.close()
    if pumped.outcome == "done":
        send(conn, ["done", _done_payload(request, stream.responses)])
    elif pumped.outcome == "error":
        _send_error(conn, pumped.error)


def _writable_check(conn: Connection) -> Callable[[], bool]:
    """Whether a small message can go without blocking: the caller's socket buffer has room (poll, not
    select: a replica's descriptors may number past select's 1,024; one poll object per request)."""
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLOUT)
    return lambda: bool(poller.poll(0))


def _send_stream(conn: Connection, request: Request, stream: ResponseStream) -> None:
    """A stream read in this thread (one that cannot wake the pump: a task query's)."""
    events = stream.events(poll_interval=POLL_SECONDS)
    try:
        for event in events:
            if event is None:
                if conn.poll(0):  # the caller never sends twice: readable means it closed (cancel)
                    raise LinkBroken("caller went away")
            else:
                _send_event(conn, event)
        send(conn, ["done", _done_payload(request, stream.responses)])
    except (LinkBroken, EOFError, OSError):
        stream.cancel()  # the caller is gone: free the engine for others
    except Exception as exc:
        _send_error(conn, exc)
    finally:
        events.close()  # a stream left mid-way lets go of what it holds now, not at garbage collection


# ---- calling a Backend over the link ----

class ConnectionPool:
    """Authenticated connections to one address that finished their last request cleanly, for the next
    request to reuse (at most ``keep`` idle ones; more are closed)."""

    def __init__(self, address: tuple[str, int], authkey: bytes, keep: int = 512) -> None:
        self.address, self.authkey, self.keep = address, authkey, keep
        self._idle: list[Connection] = []
        self._lock = threading.Lock()

    def take(self) -> Connection:
        """An idle connection that is still open, else a new one (LinkBroken if the peer is unreachable)."""
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return connect(self.address, self.authkey)
            if _still_open(conn):
                return conn
            conn.close()

    def give_back(self, conn: Connection) -> None:
        with self._lock:
            if len(self._idle) < self.keep:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _still_open(conn: Connection) -> bool:
    """An idle connection has nothing to read: readable means the peer closed it (or broke the protocol)."""
    try:
        return not conn.poll(0)
    except (OSError, EOFError):
        return False


class RemoteBackend(Backend):
    """A backend in another process (a replica, or a deployment's router), over pooled connections."""

    def __init__(self, address: tuple[str, int], authkey: bytes) -> None:
        self.address, self.authkey = address, authkey
        self._pool = ConnectionPool(address, authkey)

    def submit(self, request: Request) -> "RemoteStream":
        conn = self._pool.take()
        try:
            send(conn, request.to_wire())
        except (OSError, EOFError) as exc:
            conn.close()
            raise LinkBroken(f"lost {self.address}: {exc}") from None
        except TypeError:  # an option that is not plain data
            conn.close()
            raise
        return RemoteStream(conn, _read_done(request), reuse=self._pool.give_back)

    def health(self, timeout: float = 10.0) -> dict[str, Any]:
        return wire.health_from_wire(call(self.address, self.authkey, {"op": "health"}, timeout))

    def terminate(self) -> None:
        call(self.address, self.authkey, {"op": "terminate"})


class RemoteStream(ResponseStream):
    def __init__(self, conn: Connection, read_done: Callable[[Any], Any] = wire.responses_from_wire,
                 reuse: Optional[Callable[[Connection], None]] = None) -> None:
        self._conn, self._read_done, self._reuse = conn, read_done, reuse
        self._cancelled = False
        self._abandoned: Optional[str] = None
        self._held: Optional[list[Any]] = None  # a message read ahead while joining chunks
        self._lock = threading.Lock()
        self._released = False  # the connection went back to the pool or was closed: not ours to touch
        # Connection.poll builds a selector per call (its Python was most of a router's time under W1's 256
        # streams, two calls a message); one poll object, registered once, asks the same in one system call
        self._poller = select.poll()
        self._poller.register(conn.fileno(), select.POLLIN)
        self.responses = None

    def cancel(self) -> None:
        """The server hears of it at once: the connection is shut down here, since the caller may have
        stopped reading (a front end that raised out of its loop leaves the stream suspended until garbage
        collection). A reading thread then ends with RequestCancelled."""
        self._cancelled = True
        with self._lock:
            if not self._released:
                with contextlib.suppress(OSError):
                    with socket.socket(fileno=os.dup(self._conn.fileno())) as sock:
                        sock.shutdown(socket.SHUT_RDWR)

    def abandon(self, reason: str) -> None:
        """The serving process is known lost (a host gone silent keeps its connections open): the reading
        thread ends the stream with LinkBroken(reason) within POLL_SECONDS."""
        self._abandoned = reason

    def events(self, poll_interval: Optional[float] = None) -> Iterator[Any]:
        waited, ended_cleanly = 0.0, False
        try:
            while True:
                if self._cancelled:
                    raise RequestCancelled("the request was cancelled")
                if self._abandoned is not None:
                    raise LinkBroken(self._abandoned)
                if self._held is None and not self._readable(POLL_SECONDS):
                    waited += POLL_SECONDS
                    if poll_interval is not None and waited >= poll_interval:
                        waited = 0.0
                        yield None
                    continue
                waited = 0.0
                message, self._held = self._held or receive_reply(self._conn), None
                kind = message[0]
                if kind == "started":
                    yield STARTED
                elif kind == "chunk":
                    yield self._joined(self._chunk(message))
                elif kind == "done":
                    ended_cleanly = True  # read whole: the connection is between requests again
                    self.responses = self._checked(self._read_done, message[1])
                    return
                else:
                    ended_cleanly = True
                    raise error_from_wire(message[1], message[2])
        except BadPeer:
            ended_cleanly = False
            raise
        except (EOFError, OSError) as exc:
            if self._cancelled:  # cancel() shut the connection down
                raise RequestCancelled("the request was cancelled") from None
            raise LinkBroken(f"the serving process went away: {exc}") from None
        finally:
            # cancelled, abandoned or broken mid-way: closing it tells the server to stop the request
            with self._lock:
                self._released = True
                if ended_cleanly and self._reuse is not None and not self._cancelled:
                    self._reuse(self._conn)
                else:
                    self._conn.close()

    def _readable(self, timeout_s: float) -> bool:
        """A message (or the end of the connection: receiving then raises) is waiting, within ``timeout_s``."""
        return bool(self._poller.poll(timeout_s * 1000))

    def _chunk(self, message: list[Any]) -> Chunk:
        return Chunk(message[1], self._checked(wire.response_from_wire, message[2]))

    def _joined(self, chunk: Chunk) -> Chunk:
        """``chunk`` and the chunks of its prompt already waiting behind it, as one: a front end that fell
        behind the replica (hundreds of streams in one router process) sends one message for the tokens it
        missed rather than one per engine step, so its per-message work shrinks as the load grows."""
        while self._readable(0):
            message = receive_reply(self._conn)
            later = self._chunk(message) if message[0] == "chunk" else None
            if later is None or not chunk.joins(later):
                self._held = message
                break
            chunk = chunk.followed_by(later)
        return chunk

    @staticmethod
    def _checked(convert: Callable[[Any], Any], payload: Any) -> Any:
        try:
            return convert(payload)
        except wire.MalformedMessage as exc:
            raise BadPeer(str(exc)) from None

