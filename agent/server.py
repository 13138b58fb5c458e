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

* ``GET /events?count=N&interval=S``: N server-sent events, one every S seconds;
  ``GET /stream?chunks=N&size=B&interval=S``: a chunked body of N chunks of B bytes,
  one every S seconds (a token stream, a large download).
* A websocket at any path (``Upgrade: websocket``): echoes every text and binary
  message and answers pings; the text ``/instance`` answers the instance id,
  ``/headers`` the handshake's request headers (JSON), and ``/close CODE REASON``
  closes the socket with that code. A close from the client is echoed with its code.

The server speaks HTTP/1.1 with keep-alive and listens with a backlog of
``LISTEN_BACKLOG``: a caller (the gateway's pool) reuses its connections, and a
burst of new ones is queued, not dropped (a dropped SYN is retried by the
client's kernel only after a second).

* Progress: one unit of work per second, each a line ``progress N s`` on stdout (the
  workload's log). With ``ARBITRAGE_API_URL`` and the token the
  agent reports it every ``AGENT_PROGRESS_SECONDS`` (default 10) as
  ``completed_seconds`` (``POST /api/v1/agent/progress``); with ``AGENT_WORK_SECONDS=N``
  the job is done after N seconds of work and says so (``finished: true``).

Any other variable is the customer's and is ignored here. SIGTERM (what a cloud
sends before reclaiming an instance) shuts the server down and exits 0.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import struct
import sys
import threading
import time
import urllib.error
import urllib.request
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from urllib.parse import parse_qs, urlsplit

from agent.checkpoint import StorageClient, StorageClientError

# Bodies are counted, not kept: the agent only reports their length.
_READ_CHUNK = 64 * 1024
# socketserver's default (5) overflows under a burst of connections; the kernel then drops the SYN
# and the client retries only after a second (its initial retransmission timeout).
LISTEN_BACKLOG = 1024
_WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x1, 0x2, 0x8, 0x9, 0xA


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
    protocol_version = "HTTP/1.1"  # keep-alive: every answer has a length or is chunked
    # Headers and body go out in separate writes: without TCP_NODELAY the body would wait for the
    # peer's delayed ACK on a kept-alive connection.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        agent = self.server.agent
        path = self.path.split("?", 1)[0]
        if self.headers.get("Upgrade", "").lower() == "websocket":
            self._websocket()
            return
        if path == "/events":
            self._stream(event=True)
            return
        if path == "/stream":
            self._stream(event=False)
            return
        if path == "/health":
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
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._drain_chunked()
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

    def _drain_chunked(self) -> int:
        total = 0
        while True:
            size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return total
            while size > 0:
                chunk = self.rfile.read(min(size, _READ_CHUNK))
                if not chunk:
                    return total
                total += len(chunk)
                size -= len(chunk)
            self.rfile.readline()

    def _stream(self, *, event: bool) -> None:
        """A body sent piece by piece, each flushed as it is made (SSE or plain chunked)."""
        query = parse_qs(urlsplit(self.path).query)

        def number(name: str, default: float) -> float:
            try:
                return float(query[name][0])
            except (KeyError, ValueError):
                return default

        count = int(number("count" if event else "chunks", 10))
        size = int(number("size", 1024))
        interval = number("interval", 0.1)
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream" if event else "application/octet-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for n in range(count):
                if n:
                    time.sleep(interval)
                piece = f"id: {n}\ndata: {n}\n\n".encode() if event else b"x" * size
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True

    def _websocket(self) -> None:
        """An echoing websocket (RFC 6455, unextended), served on this connection's thread."""
        key = self.headers.get("Sec-WebSocket-Key", "").encode()
        if not key:
            self._reply(HTTPStatus.BAD_REQUEST, {"error": "Sec-WebSocket-Key is missing."})
            return
        accept = base64.b64encode(hashlib.sha1(key + _WEBSOCKET_GUID).digest()).decode()
        self.send_response(HTTPStatus.SWITCHING_PROTOCOLS)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        handshake = {name.lower(): value for name, value in self.headers.items()}
        try:
            while True:
                opcode, payload = self._ws_read()
                if opcode == _CLOSE:
                    self._ws_write(_CLOSE, payload[:2] or struct.pack("!H", 1000))
                    return
                if opcode == _PING:
                    self._ws_write(_PONG, payload)
                elif opcode == _TEXT and payload.startswith(b"/"):
                    command, _, rest = payload.decode("utf-8", "replace").partition(" ")
                    if command == "/instance":
                        self._ws_write(_TEXT, self.server.agent.instance_id.encode())
                    elif command == "/headers":
                        self._ws_write(_TEXT, json.dumps(handshake).encode())
                    elif command == "/close":
                        code, _, reason = rest.partition(" ")
                        self._ws_write(_CLOSE, struct.pack("!H", int(code or 1000)) + reason.encode())
                        self._ws_read()  # the client's answering close
                        return
                    else:
                        self._ws_write(opcode, payload)
                elif opcode in (_TEXT, _BINARY):
                    self._ws_write(opcode, payload)
        except (OSError, ValueError, struct.error):
            return

    def _ws_read(self) -> tuple[int, bytes]:
        """One whole message (fragments joined): (opcode, payload)."""
        opcode, message = 0, b""
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                raise ValueError("connection closed")
            fin, frame_opcode, length = head[0] & 0x80, head[0] & 0x0F, head[1] & 0x7F
            if length == 126:
                length = struct.unpack("!H", self.rfile.read(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", self.rfile.read(8))[0]
            mask = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
            data = self.rfile.read(length)
            if any(mask):
                pad = (mask * (length // 4 + 1))[:length]
                data = (int.from_bytes(data, "big") ^ int.from_bytes(pad, "big")).to_bytes(length, "big")
            if frame_opcode >= 0x8:  # control frames come whole, even between fragments
                return frame_opcode, data
            opcode, message = opcode or frame_opcode, message + data
            if fin:
                return opcode, message

    def _ws_write(self, opcode: int, payload: bytes) -> None:
        length = len(payload)
        if length < 126:
            head = struct.pack("!BB", 0x80 | opcode, length)
        elif length < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 126, length)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 127, length)
        self.wfile.write(head + payload)
        self.wfile.flush()

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
    request_queue_size = LISTEN_BACKLOG

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
