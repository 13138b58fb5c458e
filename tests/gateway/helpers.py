"""The gateway's end-to-end helpers: a real uvicorn gateway process, real agents, a header-echoing upstream."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from django.conf import settings

from tests.factories import WorkloadFactory
from tests.live import ROOT, database_url_for_tests, wait_until
from workloads import routing
from workloads.models import Workload, WorkloadRouting, WorkloadStatus

S = WorkloadStatus


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Process:
    """A subprocess of the test, logging to a file under the test var/ directory."""

    def __init__(self, command: list[str], env: dict[str, str], log_name: str) -> None:
        self.log_path = Path(settings.VAR_DIR) / log_name
        self.log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


class Gateway(Process):
    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "ARBITRAGE_VAR_DIR": str(settings.VAR_DIR),
            "DATABASE_URL": database_url_for_tests(),
            **(env or {}),
        }
        command = [
            sys.executable, "-m", "uvicorn", "gateway.asgi:application",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--no-access-log", "--no-proxy-headers", "--no-server-header", "--no-date-header",
        ]  # fmt: skip
        super().__init__(command, full_env, f"gateway-{self.port}.log")
        self.client = httpx.Client(base_url=self.url, timeout=60)
        wait_until(self._up, timeout=60, what=f"the gateway to answer (log: {self.log_path})")

    def _up(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"gateway exited: {self.log_text()[-3000:]}")
        try:
            return self.client.get("/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def get(self, workload: Workload | str, path: str = "/", **kwargs) -> httpx.Response:
        return self.client.get(f"/w/{getattr(workload, 'id', workload)}{path}", **kwargs)

    def stop(self) -> None:
        self.client.close()
        super().stop()


class Agent(Process):
    """The sample workload agent (what a local-cloud instance runs)."""

    def __init__(self, instance_id: str) -> None:
        self.port = free_port()
        self.instance_id = instance_id
        self.endpoint = f"127.0.0.1:{self.port}"
        env = {**os.environ, "PORT": str(self.port), "INSTANCE_ID": instance_id}
        super().__init__([sys.executable, "-m", "agent"], env, f"agent-{instance_id}.log")
        wait_until(self._up, timeout=30, what=f"agent {instance_id} to answer")

    def _up(self) -> bool:
        try:
            return httpx.get(f"http://{self.endpoint}/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False


class EchoUpstream:
    """An upstream that answers with the request's headers, and sends hop-by-hop headers of its own."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                upstream.requests.append({name.lower(): value for name, value in self.headers.items()})
                body = json.dumps({"headers": upstream.requests[-1], "path": self.path}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "X-Upstream-Hop")
                self.send_header("X-Upstream-Hop", "drop me")
                self.send_header("Keep-Alive", "timeout=5")
                self.send_header("X-Upstream-Kept", "kept")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def stopped_after(make):
    """A starter for a fixture: what it starts is stopped when the test ends."""
    started = []

    def start(*args, **kwargs):
        started.append(make(*args, **kwargs))
        return started[-1]

    return start, started


def routed_workload(endpoint: str | None, *, status: str = S.RUNNING, access: str = "public", customer=None, **kw):
    """A workload in ``status`` routed to ``endpoint``, as provisioning leaves it."""
    extra = {"customer": customer} if customer is not None else {}
    workload = WorkloadFactory(status=status, config={"health_check_port": 8080, "access": access}, **extra, **kw)
    if endpoint:
        WorkloadRouting.objects.create(
            workload=workload, endpoint=endpoint, provider="aws", region="us-east-1", instance_id="i-test"
        )
        routing.kv_set_endpoint(workload_id=workload.id, endpoint=endpoint)
    routing.kv_set_status(workload_id=workload.id, status=status)
    return workload


def reroute(workload: Workload, endpoint: str) -> None:
    WorkloadRouting.objects.filter(workload=workload).update(endpoint=endpoint)
    routing.kv_set_endpoint(workload_id=workload.id, endpoint=endpoint)


def request_is_held(url: str, host: str) -> bool:
    """True when the gateway keeps a request waiting (a migration under way) instead of answering it."""
    try:
        httpx.get(f"{url}/", headers={"Host": host}, timeout=0.5)
    except httpx.TimeoutException:
        return True
    return False
