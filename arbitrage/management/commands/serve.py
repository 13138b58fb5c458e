"""Run the whole service on this machine: web, Celery worker, Celery beat and the routing gateway.

``make run`` calls this. It checks that every configured service answers,
applies migrations, starts the four processes and stops all of them when it
gets Ctrl-C (or SIGTERM), or when any one of them exits.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from arbitrage.env import ConfigError
from arbitrage.preflight import check_services

STOP_GRACE_SECONDS = 15


class Command(BaseCommand):
    help = "Run web server, Celery worker, Celery beat and the routing gateway together; Ctrl-C stops all four."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--bind", default="127.0.0.1:8000", help="host:port for the web server")
        parser.add_argument(
            "--gateway-bind", default="127.0.0.1:8001", help="host:port for the routing gateway (workload endpoints)"
        )
        parser.add_argument("--concurrency", type=int, default=2, help="Celery worker processes")
        parser.add_argument("--no-migrate", action="store_true")

    def handle(self, *args, bind: str, gateway_bind: str, concurrency: int, no_migrate: bool, **options) -> None:
        if concurrency < 1:
            raise CommandError("--concurrency: must be at least 1")
        gateway_host, _, gateway_port = gateway_bind.rpartition(":")
        if not gateway_host or not gateway_port.isdigit():
            raise CommandError(f"--gateway-bind: expected host:port, got {gateway_bind!r}")
        try:
            check_services()
        except ConfigError as exc:
            raise CommandError(str(exc)) from None
        if not no_migrate:
            call_command("migrate", interactive=False, verbosity=0)
        # The bundled price catalog, so placement works offline (loading it again changes nothing).
        call_command("catalog_load", verbosity=0)

        python = sys.executable
        commands = {
            "web": [
                python,
                "-m",
                "gunicorn",
                "arbitrage.wsgi:application",
                "--bind",
                bind,
                "--workers",
                "2",
                "--threads",
                "4",
                "--access-logfile",
                "-",
            ],
            "worker": [
                python,
                "-m",
                "celery",
                "-A",
                "arbitrage",
                "worker",
                "--loglevel",
                "INFO",
                "--concurrency",
                str(concurrency),
                "--hostname",
                "worker@%h",
            ],
            "beat": [
                python,
                "-m",
                "celery",
                "-A",
                "arbitrage",
                "beat",
                "--loglevel",
                "INFO",
                "--pidfile",
                str(Path(settings.VAR_DIR) / "celerybeat.pid"),
            ],
            "gateway": [
                python,
                "-m",
                "uvicorn",
                "gateway.asgi:application",
                "--host",
                gateway_host,
                "--port",
                gateway_port,
                "--no-access-log",  # the gateway logs its own line per request
                "--no-proxy-headers",
                "--no-server-header",
                "--no-date-header",
            ],
        }
        # A stale pidfile from a killed beat would stop the new one from starting.
        (Path(settings.VAR_DIR) / "celerybeat.pid").unlink(missing_ok=True)

        processes: dict[str, subprocess.Popen] = {}
        stopping = False

        def request_stop(signum, frame) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        for name, command in commands.items():
            # Own process group: Ctrl-C reaches us once, and we stop children in order.
            processes[name] = subprocess.Popen(command, cwd=settings.BASE_DIR, start_new_session=True)
        host, _, port = bind.rpartition(":")
        self.stdout.write(
            f"running: web http://{host or '127.0.0.1'}:{port}/ (admin /admin/, API docs /api/docs/), "
            f"worker, beat, gateway http://{gateway_bind}/w/<workload-id>/. Ctrl-C stops all four."
        )

        exited: str | None = None
        while not stopping and exited is None:
            for name, process in processes.items():
                try:
                    process.wait(timeout=0.3)
                except subprocess.TimeoutExpired:
                    continue
                exited = name
                break
        _stop_all(processes)
        if exited is not None and not stopping:
            raise CommandError(f"{exited} exited with status {processes[exited].returncode}; stopped the others")


def _stop_all(processes: dict[str, subprocess.Popen]) -> None:
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes.values():
        try:
            process.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
