"""The threaded HTTP server the fake clouds of these tests run on: 127.0.0.1, a free port.

``EmulatorServer`` is the base of the Azure and GCP emulators and of the fake price
APIs: each says which HTTP ``methods`` it answers and implements ``respond`` (the raw
request in; the status, headers and raw body of the answer out); the server does the
HTTP around it, reading the request body by its ``Content-Length``, writing the answer
with its own, logging nothing, and starting and stopping (``start()`` / ``stop()``, or
as a context manager).
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class EmulatorServer:
    #: The HTTP methods answered; any other answers 501 Not Implemented.
    methods: tuple[str, ...] = ("GET",)
    #: "HTTP/1.1" keeps connections alive between requests, as the clouds' APIs do.
    protocol_version = "HTTP/1.1"

    def __init__(self) -> None:
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def respond(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """The answer to one request: its status, its headers (``Content-Length`` aside) and its body."""
        raise NotImplementedError

    def start(self) -> Self:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = server.protocol_version
            disable_nagle_algorithm = True  # no 40 ms delayed-ACK stall between headers and body

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, headers, payload = server.respond(self.command, self.path, dict(self.headers.items()), raw)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        for method in self.methods:
            setattr(Handler, f"do_{method}", Handler._serve)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (again is fine)."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:<port>``."""
        assert self._httpd is not None, "the server is not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"
