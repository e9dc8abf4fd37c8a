"""The "rest" transport: the Flask app behind waitress, a production WSGI server with a thread pool
(never Flask's development server)."""
from __future__ import annotations

import threading

from waitress.server import create_server

from mii_core.serving.transport import Transport
from mii_server_rest.app import create_app


class RestTransport(Transport):
    def start(self) -> None:
        settings = self.settings
        app = create_app(self.backend, settings)
        # create_server binds now, so a taken port fails here (OSError), in start().
        self._server = create_server(app, host=settings.host, port=settings.port, threads=settings.threads,
                                     ident="mii-core", connection_limit=max(100, 4 * settings.threads),
                                     # the app refuses bodies over max_request_bytes with a JSON 400;
                                     # waitress refuses absurd ones (a declared length 16x over) with 413
                                     # before reading them
                                     max_request_body_size=16 * settings.max_request_bytes,
                                     clear_untrusted_proxy_headers=True)
        self._thread = threading.Thread(target=self._server.run, name="rest-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.close()
        self._server.task_dispatcher.shutdown(timeout=2)
