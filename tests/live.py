"""Helpers for end-to-end tests that run a real Celery worker process.

The worker is started with the same settings module as the tests, pointed at
the test database, so everything it does is visible to the test and the
other way round (tests using it must be ``transaction=True``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def wait_until(predicate: Callable[[], Any], *, timeout: float = 60, interval: float = 0.2, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def database_url_for_tests() -> str:
    """A DATABASE_URL for the database the tests are using right now."""
    name = connection.settings_dict["NAME"]
    if connection.vendor == "sqlite":
        return f"sqlite:///{Path(name).resolve()}"
    parts = urlsplit(settings.DATABASE_URL)
    return urlunsplit(parts._replace(path=f"/{name}"))


class Worker:
    """A real ``celery worker`` process on the test database and broker."""

    def __init__(self, *, concurrency: int = 2, env: dict[str, str] | None = None, name: str = "w1") -> None:
        self.log_path = Path(settings.VAR_DIR) / f"worker-{name}.log"
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "ARBITRAGE_VAR_DIR": str(settings.VAR_DIR),
            "DATABASE_URL": database_url_for_tests(),
            **(env or {}),
        }
        self.command = [
            sys.executable, "-m", "celery", "-A", "arbitrage", "worker",
            "--pool", "prefork", "--concurrency", str(concurrency), "--loglevel", "INFO",
            "--hostname", f"{name}-{os.getpid()}@%h",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]  # fmt: skip
        self.process: subprocess.Popen | None = None

    def start(self) -> Worker:
        self.log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command, cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        return self

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes: a crash, nothing is cleaned up."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        # Nothing a stopped test worker was doing matters any more: stop it at once.
        self.kill()
        self.log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def purge_broker() -> None:
    from arbitrage.celery import app

    app.control.purge()


class WebhookReceiver:
    """A local HTTP server that records the webhooks it receives.

    It answers each with the next status in ``answers``, 204 once they run out.
    """

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.answers: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.received.append({"headers": dict(self.headers), "body": body, "json": json.loads(body)})
                self.send_response(receiver.answers.pop(0) if receiver.answers else 204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class HealthServer:
    """Answers ``GET /health`` like a workload would, on one free port on each of ``hosts``.

    ``mode``: "ok" (200 and a small JSON body), "error" (500), or "hang" (waits 3 s, then 500).
    Other paths answer 404.
    """

    def __init__(self, hosts: tuple[str, ...] = ("127.0.0.1",), *, mode: str = "ok") -> None:
        self.mode = mode
        server_of = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if server_of.mode == "hang":
                    time.sleep(3)
                ok = server_of.mode == "ok"
                body = b'{"status": "ok"}' if ok else b'{"status": "failing"}'
                self.send_response((200 if ok else 500) if self.path == "/health" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        first = ThreadingHTTPServer((hosts[0], 0), Handler)
        self.port = first.server_address[1]
        self.address = f"{hosts[0]}:{self.port}"
        self.servers = [first] + [ThreadingHTTPServer((host, self.port), Handler) for host in hosts[1:]]
        for server in self.servers:
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


class ScriptedServer:
    """A loopback HTTP server that answers each request with the next scripted answer.

    ``answers`` holds ``(status, headers, body)``; a body that is not bytes is sent as JSON.
    Once they run out it answers 200 ``{}``. ``requests`` records each request's method, path,
    headers and body. An answer with status ``0`` closes the connection without answering.
    """

    def __init__(self, answers: list[tuple[int, dict[str, str], Any]] | None = None) -> None:
        self.answers = list(answers or [])
        self.requests: list[dict[str, Any]] = []
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                scripted.requests.append(
                    {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
                )
                status, headers, payload = scripted.answers.pop(0) if scripted.answers else (200, {}, {})
                if status == 0:
                    self.close_connection = True
                    self.connection.close()
                    return
                raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = _answer

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
