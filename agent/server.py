"""The agent's HTTP server, its work counter and its simulated faults.

Configuration comes from the environment, as a container's would:

* ``PORT`` (required): listen on ``127.0.0.1:PORT``.
* ``INSTANCE_ID``, ``PROVIDER``, ``WORKLOAD_ID``: echoed back, so a caller can
  tell which instance answered.
* ``AGENT_NEVER_HEALTHY=1``: ``/health`` always answers 503.
* ``POST /_agent/unhealthy`` / ``POST /_agent/healthy``: start / stop failing ``/health``.
* ``POST /_agent/checkpoint``: save a checkpoint now and answer its id (before a planned move).
* ``AGENT_DIE_AFTER_SECONDS=T``: exit with status 1 after T seconds (a crash).
* ``INTERRUPTION_NOTICE_FILE``: where the cloud posts the spot interruption
  notice (the local stand-in for a metadata endpoint). The agent polls it every
  second; on a notice it reports to ``ARBITRAGE_API_URL`` with its
  ``WORKLOAD_AGENT_TOKEN`` (``POST /api/v1/agent/interruption``).
* ``WORKLOAD_STORAGE_ENABLED=1``: the work is durable. On start the agent
  restores its progress from the newest complete checkpoint; it checkpoints
  every ``AGENT_CHECKPOINT_SECONDS`` (default 10) and once more, as its final
  checkpoint, on the interruption notice.

* Progress: one unit of work per second, each a line ``progress N s`` on stdout (the
  workload's log). With ``ARBITRAGE_API_URL`` and the token the
  agent reports it every ``AGENT_PROGRESS_SECONDS`` (default 10) as
  ``completed_seconds`` (``POST /api/v1/agent/progress``); with ``AGENT_WORK_SECONDS=N``
  the job is done after N seconds of work and says so (``finished: true``).

Any other variable is the customer's and is ignored here. SIGTERM (what a cloud
sends before reclaiming an instance) shuts the server down and exits 0.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

from agent.checkpoint import StorageClient, StorageClientError

# Bodies are counted, not kept: the agent only reports their length.
_READ_CHUNK = 64 * 1024


class Agent:
    """The state the handler reports: identity, uptime and the work counter."""

    def __init__(self, env: dict[str, str]) -> None:
        self.instance_id = env.get("INSTANCE_ID", "")
        self.provider = env.get("PROVIDER", "")
        self.workload_id = env.get("WORKLOAD_ID", "")
        self.never_healthy = env.get("AGENT_NEVER_HEALTHY", "") == "1"
        self.started = time.monotonic()
        self.progress = 0
        self.stopping = threading.Event()
        self.exit_status = 0
        self.notice_file = env.get("INTERRUPTION_NOTICE_FILE", "")
        self.api_url = env.get("ARBITRAGE_API_URL", "").rstrip("/")
        self.token = env.get("WORKLOAD_AGENT_TOKEN", "")
        self.interrupted = False
        self.durable = env.get("WORKLOAD_STORAGE_ENABLED") == "1" and bool(self.api_url and self.token)
        self.checkpoint_every = float(env.get("AGENT_CHECKPOINT_SECONDS") or 10)
        self.restored_progress: int | None = None
        self.progress_every = float(env.get("AGENT_PROGRESS_SECONDS") or 10)
        self.work_seconds = int(env["AGENT_WORK_SECONDS"]) if env.get("AGENT_WORK_SECONDS") else None
        self.last_checkpoint: str | None = None
        self.lock = threading.Lock()  # one checkpoint at a time

    def storage(self) -> StorageClient:
        return StorageClient(self.api_url, self.token, workload_id=self.workload_id or None, timeout=30)

    def restore(self) -> None:
        """Resume from the newest complete checkpoint: the work continues, it does not restart."""
        try:
            state = self.storage().restore_latest()
        except (StorageClientError, OSError, ValueError) as error:
            print(f"workload agent: no restore ({error})", file=sys.stderr, flush=True)
            return
        if state is not None:
            self.progress = self.restored_progress = int(json.loads(state)["progress"])
            print(f"workload agent: restored progress {self.progress}", file=sys.stderr, flush=True)

    def checkpoint(self, *, final: bool = False) -> str | None:
        """Save the progress; the checkpoint's id, or None if it could not be saved."""
        with self.lock:
            progress = self.progress
            try:
                saved = self.storage().save_checkpoint(
                    json.dumps({"progress": progress}).encode(), metadata={"progress": progress, "final": final}
                )
            except (StorageClientError, OSError, ValueError) as error:
                print(f"workload agent: checkpoint failed ({error})", file=sys.stderr, flush=True)
                return None
            self.last_checkpoint = saved.get("checkpoint_id")
            return self.last_checkpoint

    def checkpoint_periodically(self) -> None:
        while not self.interrupted and not self.stopping.wait(self.checkpoint_every):
            if not self.interrupted:
                self.checkpoint()

    def watch_for_interruption(self) -> None:
        """Poll the notice once a second, as an agent polls its cloud's metadata endpoint."""
        while not self.interrupted and not self.stopping.wait(1.0):
            if self.notice_file and os.path.exists(self.notice_file):
                self.interrupted = True
                self.on_interruption(self.checkpoint(final=True) if self.durable else None)

    def on_interruption(self, checkpoint: str | None = None) -> None:
        """Tell the control plane (its final checkpoint, if one was saved) before the cloud takes the instance."""
        if not (self.api_url and self.token):
            return
        body = json.dumps({"checkpoint": checkpoint, "reason": "interruption notice"}).encode()
        request = urllib.request.Request(
            f"{self.api_url}/api/v1/agent/interruption",
            data=body,
            method="POST",
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                print(f"workload agent: interruption reported ({response.status})", file=sys.stderr, flush=True)
        except (urllib.error.URLError, OSError) as error:
            print(f"workload agent: could not report the interruption: {error}", file=sys.stderr, flush=True)

    def work(self) -> None:
        """One unit of "work" per second until shutdown (or until the job is done): a visible sign it runs."""
        while not self.stopping.wait(1.0):
            if self.work_seconds is None or self.progress < self.work_seconds:
                self.progress += 1
                print(f"progress {self.progress} s", flush=True)  # the workload's log, one line per tick

    @property
    def finished(self) -> bool:
        return self.work_seconds is not None and self.progress >= self.work_seconds

    def report_progress_periodically(self) -> None:
        while not self.interrupted and not self.stopping.wait(self.progress_every):
            if not self.interrupted:
                self.report_progress()

    def report_progress(self) -> None:
        """Tell the control plane how much work is done (it meets deadlines by it)."""
        body = json.dumps({"completed_seconds": self.progress, "finished": self.finished}).encode()
        request = urllib.request.Request(
            f"{self.api_url}/api/v1/agent/progress",
            data=body,
            method="POST",
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10):
                pass
        except (urllib.error.URLError, OSError) as error:
            print(f"workload agent: could not report progress: {error}", file=sys.stderr, flush=True)

    def stop(self, exit_status: int) -> None:
        self.exit_status = exit_status
        self.stopping.set()

    def describe(self, path: str) -> dict[str, object]:
        return {
            "instance_id": self.instance_id,
            "provider": self.provider,
            "workload_id": self.workload_id,
            "progress": self.progress,
            "restored_progress": self.restored_progress,
            "uptime_seconds": round(time.monotonic() - self.started, 3),
            "path": path,
        }


class Handler(BaseHTTPRequestHandler):
    server: AgentServer
    server_version = "workload-agent/1"

    def do_GET(self) -> None:
        agent = self.server.agent
        if self.path.split("?", 1)[0] == "/health":
            if agent.never_healthy:
                self._reply(HTTPStatus.SERVICE_UNAVAILABLE, {"status": "unhealthy", "instance_id": agent.instance_id})
            else:
                self._reply(HTTPStatus.OK, {"status": "ok", **agent.describe(self.path)})
            return
        self._reply(HTTPStatus.OK, agent.describe(self.path))

    def do_POST(self) -> None:
        body_length = self._drain_body()
        agent = self.server.agent
        # The sample workload's own switch to fail (or pass) its health check from now on:
        # how an operator or a test makes a live instance go unhealthy without killing it.
        if self.path == "/_agent/checkpoint":  # the control plane asks for one before a planned move
            checkpoint = agent.checkpoint(final=True) if agent.durable else None
            status = HTTPStatus.OK if checkpoint else HTTPStatus.SERVICE_UNAVAILABLE
            self._reply(status, {"checkpoint": checkpoint})
            return
        if self.path in ("/_agent/unhealthy", "/_agent/healthy"):
            agent.never_healthy = self.path == "/_agent/unhealthy"
            self._reply(HTTPStatus.OK, {"healthy": not agent.never_healthy})
            return
        self._reply(HTTPStatus.OK, {**agent.describe(self.path), "body_length": body_length})

    do_PUT = do_POST

    def _drain_body(self) -> int:
        try:
            remaining = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            remaining = 0
        total = 0
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, _READ_CHUNK))
            if not chunk:
                break
            total += len(chunk)
            remaining -= len(chunk)
        return total

    def _reply(self, status: HTTPStatus, payload: dict[str, object]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        # Health probes every few seconds would drown the instance log.
        if not self.path.startswith("/health"):
            super().log_message(format, *args)


class AgentServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, agent: Agent) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.agent = agent


def main(env: dict[str, str] | None = None) -> int:
    """Serve until SIGTERM (exit 0) or the simulated crash (exit 1)."""
    env = dict(os.environ if env is None else env)
    try:
        port = int(env["PORT"])
        die_after = float(env["AGENT_DIE_AFTER_SECONDS"]) if env.get("AGENT_DIE_AFTER_SECONDS") else None
    except KeyError:
        print("workload agent: PORT is required", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"workload agent: bad configuration ({exc})", file=sys.stderr)
        return 2

    agent = Agent(env)
    server = AgentServer(port, agent)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        agent.stop(0)

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, on_sigterm)
    if agent.durable:
        agent.restore()
        threading.Thread(target=agent.checkpoint_periodically, name="checkpoints", daemon=True).start()
    threading.Thread(target=agent.work, name="work", daemon=True).start()
    if agent.api_url and agent.token:
        threading.Thread(target=agent.report_progress_periodically, name="progress", daemon=True).start()
    threading.Thread(target=agent.watch_for_interruption, name="notice", daemon=True).start()
    threading.Thread(target=server.serve_forever, args=(0.1,), name="http", daemon=True).start()
    if die_after is not None:
        crash = threading.Timer(die_after, agent.stop, args=(1,))
        crash.daemon = True
        crash.start()
    print(f"workload agent {agent.instance_id or '-'} listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)

    agent.stopping.wait()
    server.shutdown()
    server.server_close()
    reason = "simulated crash" if agent.exit_status else "shutting down"
    print(f"workload agent {agent.instance_id or '-'}: {reason}, exit {agent.exit_status}", file=sys.stderr, flush=True)
    return agent.exit_status
