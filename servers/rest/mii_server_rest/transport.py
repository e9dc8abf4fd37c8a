"""The "rest" transport: the Flask app behind waitress, a production WSGI server with a thread pool
(never Flask's development server)."""
from __future__ import annotations

import threading

from waitress.server import create_server

from mii_core.serving.transport import Transport
from mii_server_rest.app import create_app
from mii_server_rest.gate import gated_channel
from mii_server_rest.limits import RestLimits


class RestTransport(Transport):
    def start(self) -> None:
        settings = self.settings
        app = create_app(self.backend, settings)
        limits = RestLimits.from_environment()
        # create_server binds now, so a taken port fails here (OSError), in start().
        self._server = create_server(app, host=settings.host, port=settings.port, threads=settings.threads,
                                     ident="mii-core", connection_limit=limits.connection_limit,
                                     channel_timeout=limits.idle_timeout, cleanup_interval=1,
                                     # waitress itself never reads more than this (chunked bodies too);
                                     # the gate refuses a declared length over it before reading
                                     max_request_body_size=settings.max_request_bytes + 1,
                                     clear_untrusted_proxy_headers=True,
                                     # keep reading while a request runs, so that a client that leaves is
                                     # seen (waitress.client_disconnected) and its request cancelled
                                     channel_request_lookahead=1)
        self._server.channel_class = gated_channel(settings.api_key, settings.max_request_bytes,
                                                   limits.header_timeout)
        self._thread = threading.Thread(target=self._server.run, name="rest-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.close()
        self._server.task_dispatcher.shutdown(timeout=2)
