"""The local cloud's fleet host: one process serving many instances (``LOCAL_CLOUD_HOST_MODE=fleet``).

Each instance is still a real agent answering HTTP on an address of its own: the host listens
for it on ``127.X.Y.Z:<its health-check port>`` (all of 127.0.0.0/8 is loopback on Linux), as a
VM listens on its own IP. What the sample agent does (``agent/server.py``) is done here on one
asyncio loop (uvloop when installed) for every instance at once:

* ``/health`` answers 503 ``booting`` until the instance's boot delay has passed, then what the
  agent answers (``AGENT_NEVER_HEALTHY``, ``POST /_agent/unhealthy`` / ``/_agent/healthy``);
* one unit of work per second, progress reported to ``ARBITRAGE_API_URL`` with the workload's
  token every ``AGENT_PROGRESS_SECONDS`` (the agent's own payload, ``finished`` after
  ``AGENT_WORK_SECONDS``), an interruption notice reported (with a final checkpoint when the
  workload's storage is enabled), periodic and requested checkpoints (``POST /_agent/checkpoint``),
  the restore on boot, and ``AGENT_DIE_AFTER_SECONDS``.

The agent's state and its blocking calls (checkpoints, reports) are the agent's own
(``agent.server.Agent``); the blocking calls run in a small thread pool. Timers are one tick
of the loop per second for all instances, never a thread per instance.

The adapter talks to the host over a unix socket in the state directory (one JSON line per
request and per answer): ``ping``, ``start``, ``stop``, ``notice``, ``status`` (which of these
ids run, in one call) and ``shutdown``.

Standard library only, plus the agent's modules: the adapter runs it as a script,
``python -P .../local/fleet_host.py --detach STATE_DIR`` with the project on ``PYTHONPATH``
(``fleet_client.host_ensure``), and ``manage.py local_fleet_host`` in the foreground.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import os
import random
import resource
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from agent.server import LISTEN_BACKLOG, Agent

try:
    import uvloop
except ImportError:  # the host runs on the standard loop too, only slower
    uvloop = None

SOCKET_NAME = "host.sock"
LOG_NAME = "host.log"
# A unix socket's path must fit in sun_path (108 bytes on Linux); longer ones go through a
# directory file descriptor (``/proc/self/fd/N/host.sock``).
_SUN_PATH_MAX = 100
_CONTROL_LIMIT = 64 * 1024 * 1024  # a status request names up to every instance
_HEAD_LIMIT = 64 * 1024
_READ_CHUNK = 64 * 1024
# Threads for the agents' blocking calls (progress reports, checkpoints, restores): enough to keep
# the control plane busy, far fewer than the instances.
_WORKER_THREADS = 16
# Loopback addresses tried in a row before concluding the port is taken on every one of them
# (a process listening on 0.0.0.0:PORT).
_BIND_ATTEMPTS = 32
# 127.1.0.1 to 127.254.255.254, skipping 127.0.x.x (127.0.0.1 and /etc/hosts' 127.0.1.1) and the
# .0 and .255 of each /24, which some tools treat as special.
_ADDRESSES = 254 * 256 * 254
_WATCH_SECONDS = 5.0

T = TypeVar("T")


# --- the control channel (used by the host and by ``fleet_client``) -----------------------------------


def control_path(state_dir: Path) -> Path:
    return state_dir / SOCKET_NAME


@contextlib.contextmanager
def _short_path(path: Path):
    """``path``, or an equivalent short enough for a unix socket's address."""
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        yield str(path)
        return
    directory = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{directory}/{path.name}"
    finally:
        os.close(directory)


def control_connect(path: Path, *, timeout: float) -> socket.socket:
    """A connection to the host's control socket; ``FileNotFoundError`` / ``ConnectionRefusedError`` if none."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        with _short_path(path) as address:
            sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


def control_ask(path: Path, message: dict[str, Any], *, timeout: float) -> dict[str, Any]:
    """Send one request, read its answer."""
    with control_connect(path, timeout=timeout) as sock:
        sock.sendall(json.dumps(message).encode() + b"\n")
        with sock.makefile("rb") as answers:
            line = answers.readline(_CONTROL_LIMIT)
    if not line:
        raise ConnectionResetError("the fleet host closed the connection without answering")
    return json.loads(line)


# --- one hosted instance -------------------------------------------------------------------------------


class _InstanceLogs(threading.local):
    """Where the current thread's prints go: the instance's ``output.log`` while it works for one."""

    path: str | None = None


_instance_logs = _InstanceLogs()


class _RoutedStream:
    """``sys.stdout`` / ``sys.stderr`` of the host: the agents' own prints land in their instance's log."""

    def __init__(self, fallback: Any) -> None:
        self.fallback = fallback

    def write(self, text: str) -> int:
        if _instance_logs.path is None:
            return self.fallback.write(text)
        _append(_instance_logs.path, text)
        return len(text)

    def flush(self) -> None:
        self.fallback.flush()

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, isatty...: the stream it stands in for
        return getattr(self.fallback, name)


def _append(path: str, text: str) -> None:
    try:
        with open(path, "a") as log:
            log.write(text)
    except OSError:
        pass  # the run directory is gone: nobody reads this log any more


class Hosted:
    """One instance: the agent's state, its listening server and its timers."""

    __slots__ = (
        "address",
        "agent",
        "checkpointing",
        "connections",
        "die_timer",
        "log_path",
        "next_checkpoint",
        "next_report",
        "port",
        "ready_at",
        "reporting",
        "restored",
        "server",
        "started_at",
    )

    def __init__(self, agent: Agent, *, address: str, port: int, boot_delay_seconds: float, log_path: str) -> None:
        self.agent = agent
        self.address = address
        self.port = port
        self.server: asyncio.AbstractServer | None = None
        self.started_at = time.time()
        self.ready_at = ready_at = self.started_at + boot_delay_seconds  # as the adapter counts it
        self.restored = not agent.durable  # a durable instance boots once it has restored its checkpoint
        self.next_report = ready_at + agent.progress_every
        self.next_checkpoint = ready_at + agent.checkpoint_every
        self.reporting = False
        self.checkpointing = False
        self.die_timer: asyncio.TimerHandle | None = None
        self.connections: set[asyncio.StreamWriter] | None = None  # made on the first connection
        self.log_path = log_path

    def booted(self, now: float) -> bool:
        return self.restored and now >= self.ready_at

    def log(self, line: str) -> None:
        _append(self.log_path, line + "\n")


class PortUnavailable(OSError):
    """The instance's port is taken on every loopback address tried."""


# --- the host ------------------------------------------------------------------------------------------


class FleetHost:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.host_id = uuid.uuid4().hex
        self.instances: dict[str, Hosted] = {}
        # How instances that ended on their own ended (a simulated crash), until the adapter stops them.
        self.ended: dict[str, dict[str, Any]] = {}
        self.addresses_used: set[str] = set()
        self._cursor = random.randrange(_ADDRESSES)  # a new host does not hand out its predecessor's addresses first
        self.pool = ThreadPoolExecutor(max_workers=_WORKER_THREADS, thread_name_prefix="agent")
        self.done = asyncio.Event()
        self._socket_inode: int | None = None

    # -- running ---------------------------------------------------------------------------------------

    async def run(self, on_ready: Callable[[str], None] | None = None) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.done.set)
        path = control_path(self.state_dir)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        path.unlink(missing_ok=True)  # a dead host's socket (the caller made sure it is dead)
        old_mask = os.umask(0o177)  # only this user may steer the host
        try:
            with _short_path(path) as address:
                sock.bind(address)
        finally:
            os.umask(old_mask)
        self._socket_inode = path.stat().st_ino
        control = await asyncio.start_unix_server(self._control, sock=sock, limit=_CONTROL_LIMIT)
        ticking = asyncio.create_task(self._tick())
        print(f"fleet host {self.host_id} (pid {os.getpid()}) listening on {path}", file=sys.stderr, flush=True)
        if on_ready is not None:
            on_ready(f"ready {os.getpid()} {self.host_id}\n")
        try:
            await self.done.wait()
        finally:
            ticking.cancel()
            control.close()
            for instance_id in list(self.instances):
                self._end(instance_id, status=0, by_request=True)
            with contextlib.suppress(OSError):
                if path.stat().st_ino == self._socket_inode:
                    path.unlink()
            self.pool.shutdown(wait=False, cancel_futures=True)
            print(f"fleet host {self.host_id}: stopped", file=sys.stderr, flush=True)

    async def _tick(self) -> None:
        """Once a second for every instance: a unit of work, and the reports and checkpoints that are due."""
        next_watch = time.monotonic() + _WATCH_SECONDS
        while True:
            await asyncio.sleep(1.0)
            now = time.time()
            for hosted in list(self.instances.values()):
                if hosted.booted(now):
                    self._work(hosted, now)
            if time.monotonic() >= next_watch:
                next_watch = time.monotonic() + _WATCH_SECONDS
                if not self._reachable():
                    print("fleet host: its control socket is gone; stopping", file=sys.stderr, flush=True)
                    self.done.set()

    def _reachable(self) -> bool:
        try:
            return control_path(self.state_dir).stat().st_ino == self._socket_inode
        except OSError:
            return False

    def _work(self, hosted: Hosted, now: float) -> None:
        agent = hosted.agent
        if not agent.finished:
            agent.progress += 1
        if now >= hosted.next_report:
            hosted.next_report = now + agent.progress_every
            hosted.log(f"progress {agent.progress} s")
            if agent.api_url and agent.token and not agent.interrupted and not hosted.reporting:
                hosted.reporting = True
                self._background(hosted, agent.report_progress, done=lambda _: setattr(hosted, "reporting", False))
        if agent.durable and not agent.interrupted and now >= hosted.next_checkpoint and not hosted.checkpointing:
            hosted.next_checkpoint = now + agent.checkpoint_every
            hosted.checkpointing = True
            self._background(hosted, agent.checkpoint, done=lambda _: setattr(hosted, "checkpointing", False))

    def _background(self, hosted: Hosted, call: Callable[[], T], *, done: Callable[[T | None], None]) -> None:
        """Run an agent's blocking call in the pool, its prints in the instance's log; ``done`` on the loop."""
        future = asyncio.get_running_loop().run_in_executor(self.pool, _as_instance, hosted.log_path, call)

        def finished(outcome: asyncio.Future) -> None:
            if outcome.cancelled() or outcome.exception() is not None:
                if not outcome.cancelled():
                    hosted.log(f"workload agent: {outcome.exception()!r}")
                done(None)
            else:
                done(outcome.result())

        future.add_done_callback(finished)

    # -- the control channel ---------------------------------------------------------------------------

    async def _control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                request: Any = None
                try:
                    request = json.loads(line)
                    answer = await self._handle(request)
                except (ValueError, KeyError, TypeError) as error:
                    answer = {"ok": False, "error": f"bad request: {error!r}", "permanent": True}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
                if isinstance(request, dict) and request.get("op") == "shutdown":
                    self.done.set()
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request["op"]
        if op == "ping":
            return {"ok": True, "host_id": self.host_id, "pid": os.getpid(), "instances": len(self.instances)}
        if op == "start":
            return await self._start(request)
        if op == "stop":
            was_running = request["instance_id"] in self.instances
            self._end(request["instance_id"], status=0, by_request=True)
            self.ended.pop(request["instance_id"], None)
            return {"ok": True, "was_running": was_running}
        if op == "notice":
            return {"ok": True, "running": self._notice(request["instance_id"])}
        if op == "status":
            ids = request.get("ids")
            if ids is None:
                running, ended = list(self.instances), self.ended
            else:
                running = [instance_id for instance_id in ids if instance_id in self.instances]
                ended = {instance_id: self.ended[instance_id] for instance_id in ids if instance_id in self.ended}
            return {"ok": True, "host_id": self.host_id, "running": running, "ended": ended}
        if op == "shutdown":
            return {"ok": True, "host_id": self.host_id}
        return {"ok": False, "error": f"unknown operation {op!r}", "permanent": True}

    async def _start(self, request: dict[str, Any]) -> dict[str, Any]:
        instance_id = request["instance_id"]
        hosted = self.instances.get(instance_id)
        if hosted is None:
            env = {str(name): str(value) for name, value in request["env"].items()}
            try:
                agent = Agent(env)
                die_after = float(env["AGENT_DIE_AFTER_SECONDS"]) if env.get("AGENT_DIE_AFTER_SECONDS") else None
            except ValueError as error:
                return {"ok": False, "error": f"bad configuration of the agent ({error})", "permanent": True}
            port, boot_delay_seconds = int(request["port"]), float(request["boot_delay_seconds"])
            try:
                address, sock = self._bind(port)
            except PortUnavailable as error:
                return {"ok": False, "error": str(error), "permanent": True}
            except OSError as error:
                return {"ok": False, "error": f"cannot listen for {instance_id}: {error}", "permanent": False}
            hosted = Hosted(
                agent, address=address, port=port, boot_delay_seconds=boot_delay_seconds, log_path=request["log"]
            )
            # Registered before the first await: a concurrent start sees the instance and its address taken.
            self.instances[instance_id] = hosted
            self.addresses_used.add(address)
            self.ended.pop(instance_id, None)
            hosted.server = await asyncio.start_server(
                lambda reader, writer: self._serve(hosted, reader, writer), sock=sock, limit=_HEAD_LIMIT
            )
            hosted.log(f"workload agent {instance_id} listening on {address}:{hosted.port} (fleet host {self.host_id})")
            if agent.durable:
                self._background(hosted, agent.restore, done=lambda _: setattr(hosted, "restored", True))
            if die_after is not None:
                hosted.die_timer = asyncio.get_running_loop().call_later(die_after, self._end, instance_id, 1)
        return {
            "ok": True,
            "host_id": self.host_id,
            "address": hosted.address,
            "port": hosted.port,
            "started_at": hosted.started_at,
        }

    def _bind(self, port: int) -> tuple[str, socket.socket]:
        """A listening socket on a loopback address no live instance of this host uses."""
        refused = 0
        while True:
            address = self._next_address()
            if address in self.addresses_used:
                continue
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((address, port))
                sock.listen(LISTEN_BACKLOG)
            except OSError as error:
                sock.close()
                if error.errno != errno.EADDRINUSE:
                    raise
                refused += 1
                if refused >= _BIND_ATTEMPTS:
                    raise PortUnavailable(
                        f"port {port} is taken on {refused} loopback addresses in a row (does a process listen on "
                        f"0.0.0.0:{port}?)"
                    ) from None
                continue
            sock.setblocking(False)
            return address, sock

    def _next_address(self) -> str:
        index = self._cursor
        self._cursor = (self._cursor + 1) % _ADDRESSES
        return f"127.{1 + index // (256 * 254)}.{(index // 254) % 256}.{1 + index % 254}"

    def _end(self, instance_id: str, status: int, *, by_request: bool = False) -> None:
        """The instance stops: its port closes, its connections drop (a machine switched off, or a crash)."""
        hosted = self.instances.pop(instance_id, None)
        if hosted is None:
            return
        self.addresses_used.discard(hosted.address)
        hosted.agent.stop(status)
        if hosted.die_timer is not None:
            hosted.die_timer.cancel()
        if hosted.server is not None:
            hosted.server.close()
        for writer in hosted.connections or ():
            writer.transport.abort()
        if not by_request:
            self.ended[instance_id] = {"status": status, "ended_at": time.time()}
        reason = "simulated crash" if status else "shutting down"
        hosted.log(f"workload agent {instance_id}: {reason}, exit {status}")

    def _notice(self, instance_id: str) -> bool:
        """The spot interruption notice: report it (with a final checkpoint if durable), as the agent does."""
        hosted = self.instances.get(instance_id)
        if hosted is None:
            return False
        agent = hosted.agent
        if not agent.interrupted:
            agent.interrupted = True

            def report() -> None:
                agent.on_interruption(agent.checkpoint(final=True) if agent.durable else None)

            self._background(hosted, report, done=lambda _: None)
        return True

    # -- the instances' HTTP ---------------------------------------------------------------------------

    async def _serve(self, hosted: Hosted, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if hosted.connections is None:
            hosted.connections = set()
        hosted.connections.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                try:
                    method, target, version = request_line.split(" ", 2)
                except ValueError:
                    await _respond(writer, HTTPStatus.BAD_REQUEST, {"error": "bad request line"}, keep_alive=False)
                    return
                headers = {}
                for line in header_lines:
                    name, _, value = line.partition(":")
                    if name:
                        headers[name.strip().lower()] = value.strip()
                keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
                body_length = await _drain_body(reader, headers)
                if body_length is None:
                    return
                if not await self._answer(hosted, writer, method, target, headers, body_length, keep_alive):
                    return
        except ConnectionError:
            return
        finally:
            hosted.connections.discard(writer)
            writer.close()

    async def _answer(
        self,
        hosted: Hosted,
        writer: asyncio.StreamWriter,
        method: str,
        target: str,
        headers: dict[str, str],
        body_length: int,
        keep_alive: bool,
    ) -> bool:
        """Answer one request like the sample agent; whether the connection stays open."""
        agent = hosted.agent
        path = target.split("?", 1)[0]
        if not hosted.booted(time.time()):
            payload: dict[str, object] = {"status": "booting", "instance_id": agent.instance_id}
            await _respond(writer, HTTPStatus.SERVICE_UNAVAILABLE, payload, keep_alive=keep_alive)
            return keep_alive
        if method == "GET" and headers.get("upgrade", "").lower() == "websocket":
            payload = {"error": "websockets are not served by fleet-hosted instances (LOCAL_CLOUD_HOST_MODE=fleet)"}
            await _respond(writer, HTTPStatus.NOT_IMPLEMENTED, payload, keep_alive=False)
            return False
        if method == "GET" and path in ("/events", "/stream"):
            await _stream(writer, target, event=path == "/events")
            return keep_alive
        if method == "GET":
            if path == "/health" and agent.never_healthy:
                status = HTTPStatus.SERVICE_UNAVAILABLE
                payload = {"status": "unhealthy", "instance_id": agent.instance_id}
            elif path == "/health":
                status, payload = HTTPStatus.OK, {"status": "ok", **agent.describe(target)}
            else:
                status, payload = HTTPStatus.OK, agent.describe(target)
        elif method in ("POST", "PUT") and path == "/_agent/checkpoint":
            checkpoint = None
            if agent.durable:
                checkpoint = await asyncio.get_running_loop().run_in_executor(
                    self.pool, _as_instance, hosted.log_path, lambda: agent.checkpoint(final=True)
                )
            status = HTTPStatus.OK if checkpoint else HTTPStatus.SERVICE_UNAVAILABLE
            payload = {"checkpoint": checkpoint}
        elif method in ("POST", "PUT") and path in ("/_agent/unhealthy", "/_agent/healthy"):
            agent.never_healthy = path == "/_agent/unhealthy"
            status, payload = HTTPStatus.OK, {"healthy": not agent.never_healthy}
        elif method in ("POST", "PUT"):
            status, payload = HTTPStatus.OK, {**agent.describe(target), "body_length": body_length}
        else:
            status, payload = HTTPStatus.NOT_IMPLEMENTED, {"error": f"unsupported method ({method!r})"}
        await _respond(writer, status, payload, keep_alive=keep_alive)
        return keep_alive


def _as_instance(log_path: str, call: Callable[[], T]) -> T:
    _instance_logs.path = log_path
    try:
        return call()
    finally:
        _instance_logs.path = None


async def _drain_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> int | None:
    """Read the request's body and count it (bodies are counted, not kept); None if the client went away."""
    total = 0
    try:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size = int((await reader.readline()).split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):  # trailers
                        pass
                    return total
                await reader.readexactly(size)
                total += size
                await reader.readline()
        remaining = int(headers.get("content-length") or 0)
        while remaining > 0:
            chunk = await reader.read(min(remaining, _READ_CHUNK))
            if not chunk:
                return None
            total += len(chunk)
            remaining -= len(chunk)
        return total
    except (ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return None


async def _respond(
    writer: asyncio.StreamWriter, status: HTTPStatus, payload: dict[str, object], *, keep_alive: bool
) -> None:
    body = json.dumps(payload).encode()
    connection = "" if keep_alive else "Connection: close\r\n"
    head = (
        f"HTTP/1.1 {status.value} {status.phrase}\r\nServer: workload-agent/1 (fleet host)\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{connection}\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()


async def _stream(writer: asyncio.StreamWriter, target: str, *, event: bool) -> None:
    """The agent's ``/events`` (server-sent events) and ``/stream`` (a chunked body), paced on the loop."""
    query = parse_qs(urlsplit(target).query)

    def number(name: str, default: float) -> float:
        try:
            return float(query[name][0])
        except (KeyError, ValueError):
            return default

    count, size = int(number("count" if event else "chunks", 10)), int(number("size", 1024))
    interval = number("interval", 0.1)
    writer.write(
        b"HTTP/1.1 200 OK\r\nServer: workload-agent/1 (fleet host)\r\nCache-Control: no-cache\r\n"
        + (b"Content-Type: text/event-stream\r\n" if event else b"Content-Type: application/octet-stream\r\n")
        + b"Transfer-Encoding: chunked\r\n\r\n"
    )
    for n in range(count):
        if n:
            await asyncio.sleep(interval)
        piece = f"id: {n}\ndata: {n}\n\n".encode() if event else b"x" * size
        writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        await writer.drain()
    writer.write(b"0\r\n\r\n")
    await writer.drain()


# --- the process ---------------------------------------------------------------------------------------


def raise_file_limit() -> int:
    """Open files up to the hard limit: every instance holds a listening socket. The new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


def serve(state_dir: Path, *, on_ready: Callable[[str], None] | None = None) -> int:
    """Run the host until SIGTERM, a ``shutdown`` request or the loss of its socket; 0."""
    state_dir.mkdir(parents=True, exist_ok=True)
    raise_file_limit()
    sys.stdout, sys.stderr = _RoutedStream(sys.stdout), _RoutedStream(sys.stderr)
    host = FleetHost(state_dir)
    (uvloop.run if uvloop is not None else asyncio.run)(host.run(on_ready))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The local cloud's fleet host.")
    parser.add_argument("state_dir", type=Path)
    parser.add_argument("--detach", action="store_true", help="run in the background; print 'ready PID HOST_ID'")
    options = parser.parse_args(argv)
    if not options.detach:
        return serve(options.state_dir, on_ready=lambda line: print(line, end="", flush=True))
    options.state_dir.mkdir(parents=True, exist_ok=True)
    read_end, write_end = os.pipe()
    if os.fork() == 0:
        os.close(read_end)
        status = 70
        try:
            os.setsid()  # out of the caller's session and process group: it outlives the worker that asked
            log_fd = os.open(options.state_dir / LOG_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            null_fd = os.open(os.devnull, os.O_RDONLY)
            for target, source in ((0, null_fd), (1, log_fd), (2, log_fd)):
                os.dup2(source, target)
            os.close(null_fd)
            os.close(log_fd)

            def ready(line: str) -> None:
                os.write(write_end, line.encode())
                os.close(write_end)

            status = serve(options.state_dir, on_ready=ready)
        except BaseException:  # noqa: BLE001 (the detached host's last words go to its log)
            traceback.print_exc()
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as handshake:
        line = handshake.read().decode()
    if not line.startswith("ready "):
        print(f"fleet host did not start; see {options.state_dir / LOG_NAME}", file=sys.stderr)
        return 1
    print(line, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
