"""Both ends of a deployment link send each message at once (TCP_NODELAY): a reply is several small messages
in a row, which Nagle's algorithm would hold back behind the peer's delayed ACK (on this CPU a 1-token request
through the Python client took ~100 ms with it and ~10 ms without)."""
from __future__ import annotations

import os
import queue
import socket

from mii_core.serving.link import LinkServer, call, connect, send

KEY = b"k" * 32


def _nodelay(conn) -> int:
    with socket.socket(fileno=os.dup(conn.fileno())) as sock:
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_link_sockets_send_without_delay():
    served = queue.Queue()

    def handle(conn, message):
        served.put(_nodelay(conn))
        send(conn, ["done", {"ok": True}])

    server = LinkServer("127.0.0.1", 0, KEY, handle).start()
    try:
        client = connect(server.address, KEY)
        try:
            assert _nodelay(client) != 0
        finally:
            client.close()
        assert call(server.address, KEY, {"op": "health"}) == {"ok": True}
        assert served.get(timeout=10) != 0
    finally:
        server.close()
