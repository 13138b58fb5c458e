"""The demo's own service processes: web, Celery worker and beat, and the routing gateway.

Each runs in its own session (so Ctrl-C reaches only the demo, which stops them in
order) with its output in ``<var dir>/logs/<name>.log``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from demo import DemoFailed
from demo.client import http

STOP_GRACE_SECONDS = 10


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def service_commands(*, web_port: int, gateway_port: int, beat_pidfile: Path) -> dict[str, list[str]]:
    """The four processes of ``make run`` (see ``manage.py serve``), on the demo's ports."""
    python = sys.executable
    return {
        "web": [
            python, "-m", "gunicorn", "arbitrage.wsgi:application", "--bind", f"127.0.0.1:{web_port}",
            "--workers", "2", "--threads", "4", "--access-logfile", "-",
        ],
        "worker": [
            python, "-m", "celery", "-A", "arbitrage", "worker", "--loglevel", "INFO", "--concurrency", "4",
            "--hostname", "demo-worker@%h", "--without-gossip", "--without-mingle", "--without-heartbeat",
        ],
        "beat": [
            python, "-m", "celery", "-A", "arbitrage", "beat", "--loglevel", "INFO", "--pidfile", str(beat_pidfile),
        ],
        "gateway": [
            python, "-m", "uvicorn", "gateway.asgi:application", "--host", "127.0.0.1",
            "--port", str(gateway_port), "--no-access-log", "--no-proxy-headers", "--no-server-header",
            "--no-date-header",
        ],
    }  # fmt: skip


@dataclass
class Service:
    name: str
    process: subprocess.Popen
    log_path: Path


class ServiceGroup:
    """Started processes, checked while the story runs and stopped at its end, whatever happens."""

    def __init__(self, *, cwd: Path, env: dict[str, str], log_dir: Path) -> None:
        self.cwd = cwd
        self.env = env
        self.log_dir = log_dir
        self.services: dict[str, Service] = {}

    def start(self, name: str, command: list[str]) -> Service:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                command,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        service = self.services[name] = Service(name, process, log_path)
        return service

    def check_alive(self) -> None:
        """``DemoFailed`` naming the first service that exited, and its log."""
        for service in self.services.values():
            status = service.process.poll()
            if status is not None:
                raise DemoFailed(f"the {service.name} process exited with status {status} (log: {self.shown(service)})")

    def wait_http(self, name: str, url: str, *, timeout: float) -> None:
        """Wait until ``url`` answers 200, failing at once if any service exits."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            with contextlib.suppress(OSError):
                if http("GET", url, timeout=2).status == 200:
                    return
            if time.monotonic() >= deadline:
                raise DemoFailed(f"the {name} did not answer {url} within {timeout:.0f} s (log: {self.shown(name)})")
            time.sleep(0.2)

    def wait_log(self, name: str, text: str, *, timeout: float) -> None:
        """Wait until the service's log says ``text`` (the worker's "ready.")."""
        deadline = time.monotonic() + timeout
        path = self.log_path(name)
        while True:
            self.check_alive()
            if text in path.read_text(errors="replace"):
                return
            if time.monotonic() >= deadline:
                raise DemoFailed(f"the {name} was not ready within {timeout:.0f} s (log: {self.shown(name)})")
            time.sleep(0.2)

    def log_path(self, name: str) -> Path:
        return self.services[name].log_path

    def shown(self, service: Service | str) -> str:
        """A service's log path as the user reads it: relative to the project when it is inside."""
        path = self.log_path(service) if isinstance(service, str) else service.log_path
        return str(path.relative_to(self.cwd)) if path.is_relative_to(self.cwd) else str(path)

    def stop_all(self) -> list[str]:
        """SIGTERM every service, in reverse start order; SIGKILL the group of any that outlives the grace period.

        Returns the names of the services that had to be killed.
        """
        running = [s for s in reversed(self.services.values()) if s.process.poll() is None]
        for service in running:
            # The leader only, as ``make run`` does: gunicorn and celery stop their own children in order.
            service.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        killed = []
        for service in running:
            try:
                service.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                _signal_group(service.process, signal.SIGKILL)
                service.process.wait()
                killed.append(service.name)
        # Children that outlived their leader (a gunicorn or celery pool process) go too.
        for service in self.services.values():
            _signal_group(service.process, signal.SIGKILL)
        return killed


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    # Each service leads its own session and process group, whose id is its pid.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)
