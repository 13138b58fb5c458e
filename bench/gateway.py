"""What the routing gateway costs: straight to a workload agent, and through the gateway.

    .venv/bin/python bench/gateway.py [--seconds 5]

Runs in the embedded mode in a throwaway directory (SQLite, file-cache routing KV):
starts the gateway (uvicorn, as ``make run`` starts it) and upstreams that are
never the bottleneck (``bench/upstream.py``: asyncio, httptools, uvloop; each GET
answered after 20 ms of work that takes no CPU, like an app waiting on its database,
served concurrently), routes a workload to the first, and then measures, each time straight at the upstream and
through the gateway at the workload's endpoint name:

* requests/s and p50/p99 latency of GETs at 16 and at 64 connections (a load
  generator on uvloop and httptools, one keep-alive connection per request in
  flight, the gateway's upstream pool warmed before measuring),
  and the p50/p99 the gateway adds; with the kernel's listen-queue overflows
  during each run (Linux), the cause of a one-second tail when an upstream's
  backlog is too short;
* the gateway's capacity: 64 connections at an upstream that does no work, where
  every process is CPU-bound on the same cores;
* the same at 16 connections with the sample workload agent (``python -m agent``,
  what a local-cloud instance runs) as the upstream;
* the same load with the gateway's route cache off (a KV read per request), and
  how long a re-route takes to be followed (the cache's invalidation on migration);
* websocket echo round trips (p50/p99) on one connection;
* the time to first byte (and to the end) of a 1 MB/s chunked stream.

The last line is the headline: ``gateway ratio: <gateway rps / direct rps at 64
connections> (target > 0.9)``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WARMUP_SECONDS = 1.0
CONNECTIONS = (16, 64)
WEBSOCKET_ECHOES = 2000
# What each GET of the main loads costs the upstream, in waiting (no CPU): a small app's answer.
UPSTREAM_WORK_SECONDS = 0.02
STREAM_QUERY = "chunks=16&size=65536&interval=0.0625"  # 1 MiB over one second


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listen_overflows() -> int | None:
    """The kernel's count of connections dropped because a listen queue was full (Linux), or None."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return None
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            fields = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            return int(fields.get("ListenOverflows", 0))
    return None


def wait_for(url: str, process: subprocess.Popen, what: str) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with status {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{what} did not answer {url} within 60 s")


def setup_django(var_dir: str) -> None:
    os.environ["ARBITRAGE_VAR_DIR"] = var_dir
    os.environ["DJANGO_SETTINGS_MODULE"] = "arbitrage.settings"
    for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"):
        os.environ.pop(name, None)  # the embedded mode: nothing outside the throwaway directory
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request would slow the client down


def routed_workload(endpoint: str):
    from accounts.models import Customer
    from workloads import routing
    from workloads.models import Workload, WorkloadRouting, WorkloadStatus

    customer = Customer.objects.create(name="bench")
    workload = Workload.objects.create(
        customer=customer, name="bench", status=WorkloadStatus.RUNNING, requirements={"vcpu": 1, "memory_gb": 1}
    )
    WorkloadRouting.objects.create(
        workload=workload, endpoint=endpoint, provider="aws", region="bench", instance_id="i-bench"
    )
    routing.kv_set_endpoint(workload_id=workload.id, endpoint=endpoint)
    routing.kv_set_status(workload_id=workload.id, status=WorkloadStatus.RUNNING)
    return workload


class _LoadConnection(asyncio.Protocol):
    """One keep-alive connection of the load generator: a fixed GET, the answer parsed by httptools."""

    def __init__(self) -> None:
        import httptools

        self.parser = httptools.HttpResponseParser(self)
        self.answered: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        if self.answered is not None and not self.answered.done():
            self.answered.set_result(self.parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.answered is not None and not self.answered.done():
            self.answered.set_exception(ConnectionError("the server closed the connection"))

    async def get(self, request: bytes) -> int:
        self.answered = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.answered


async def drive(url: str, headers: dict[str, str], *, seconds: float, concurrency: int) -> tuple[float, list[float]]:
    """(requests/s, latencies in seconds) of ``concurrency`` loops of GETs at ``url`` for ``seconds``.

    Each loop has its own keep-alive connection and a request made once: the load generator does
    as little as it can per request, so that what is measured is the server's side.
    """
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host_header = headers.get("Host", parts.netloc)
    request = f"GET {parts.path or '/'} HTTP/1.1\r\nhost: {host_header}\r\nuser-agent: bench\r\n\r\n".encode()
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors = 0

    async def one_loop(connection: _LoadConnection, until: float, record: bool) -> None:
        nonlocal errors
        while time.monotonic() < until:
            started = time.monotonic()
            status = await connection.get(request)
            if status != 200:
                errors += 1
            elif record:
                latencies.append(time.monotonic() - started)

    connections = [
        (await loop.create_connection(_LoadConnection, parts.hostname, parts.port))[1] for _ in range(concurrency)
    ]
    warm_until = time.monotonic() + WARMUP_SECONDS
    await asyncio.gather(*(one_loop(connection, warm_until, False) for connection in connections))
    started = time.monotonic()
    await asyncio.gather(*(one_loop(connection, started + seconds, True) for connection in connections))
    elapsed = time.monotonic() - started
    for connection in connections:
        connection.transport.close()
    if errors:
        raise SystemExit(f"{errors} requests to {url} did not answer 200")
    return len(latencies) / elapsed, latencies


async def websocket_echoes(url: str, headers: dict[str, str], *, count: int) -> list[float]:
    """Round trips of ``count`` small text messages, one after the other, on one websocket."""
    from websockets.asyncio.client import connect

    round_trips: list[float] = []
    async with connect(url, additional_headers=headers, compression=None) as ws:
        for n in range(count + 100):
            started = time.monotonic()
            await ws.send(f"echo {n}")
            assert await ws.recv() == f"echo {n}"
            if n >= 100:  # the first ones warm up
                round_trips.append(time.monotonic() - started)
    return round_trips


async def stream_timing(url: str, headers: dict[str, str]) -> tuple[float, float, int]:
    """(time to the first byte, time to the end, bytes) of a streamed GET."""
    import httpx

    async with httpx.AsyncClient(timeout=30) as client:
        await client.get(url.split("/stream")[0] + "/health", headers=headers)  # a warm connection
        started = time.monotonic()
        first = None
        received = 0
        async with client.stream("GET", url, headers=headers) as response:
            async for chunk in response.aiter_raw():
                if first is None and chunk:
                    first = time.monotonic() - started
                received += len(chunk)
        return first or 0.0, time.monotonic() - started, received


async def reroute_seconds(gateway_url: str, host: str, workload, endpoint: str, instance_id: str) -> float:
    """From the KV's new endpoint to the gateway's first answer from that instance."""
    import httpx
    from asgiref.sync import sync_to_async

    from workloads import routing

    async with httpx.AsyncClient(timeout=30) as client:
        await sync_to_async(routing.kv_set_endpoint)(workload_id=workload.id, endpoint=endpoint)
        started = time.monotonic()
        while time.monotonic() - started < 30:
            response = await client.get(f"{gateway_url}/", headers={"Host": host})
            if response.json().get("instance_id") == instance_id:
                return time.monotonic() - started
            await asyncio.sleep(0.005)
    raise SystemExit("the gateway did not follow a re-route within 30 s")


def run(coroutine):
    """Run on uvloop, as the gateway does, so the load generator costs as little as it can."""
    import uvloop

    return uvloop.run(coroutine)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


class Load:
    """One measured load: its rps, latencies and the listen-queue overflows while it ran."""

    def __init__(self, url: str, headers: dict[str, str], *, seconds: float, concurrency: int) -> None:
        before = listen_overflows()
        self.rps, self.latencies = run(drive(url, headers, seconds=seconds, concurrency=concurrency))
        after = listen_overflows()
        self.overflows = "n/a" if before is None or after is None else str(after - before)

    def p(self, fraction: float) -> float:
        return percentile(self.latencies, fraction)

    def line(self, label: str) -> str:
        return (
            f"  {label:<24} {self.rps:8.1f} req/s  p50 {ms(self.p(0.5))}  p99 {ms(self.p(0.99))}"
            f"  listen overflows {self.overflows}"
        )


def start_gateway(port: int, **env: str) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "uvicorn", "gateway.asgi:application",
        "--host", "127.0.0.1", "--port", str(port),
        "--no-access-log", "--no-proxy-headers", "--no-server-header", "--no-date-header",
    ]  # fmt: skip
    # The gateway's access line per request is not what is measured.
    gateway_env = {**os.environ, "LOG_LEVEL": "WARNING", **env}
    return subprocess.Popen(command, cwd=ROOT, env=gateway_env, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()

    var_dir = tempfile.TemporaryDirectory(prefix="gateway-bench-")
    setup_django(var_dir.name)
    from django.conf import settings

    upstream_port, other_port, bare_port, agent_port = free_port(), free_port(), free_port(), free_port()
    gateway_port, uncached_port = free_port(), free_port()
    devnull = subprocess.DEVNULL
    upstreams = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "upstream.py"), str(port), instance, str(work)],
            cwd=ROOT,
            stdout=devnull,
            stderr=devnull,
        )
        for port, instance, work in (
            (upstream_port, "i-bench", UPSTREAM_WORK_SECONDS),
            (other_port, "i-other", UPSTREAM_WORK_SECONDS),
            (bare_port, "i-bare", 0),
        )
    ]
    agent = subprocess.Popen(
        [sys.executable, "-m", "agent"],
        cwd=ROOT,
        env={**os.environ, "PORT": str(agent_port), "INSTANCE_ID": "i-agent"},
        stdout=devnull,
        stderr=devnull,
    )
    gateway = start_gateway(gateway_port)
    uncached = start_gateway(uncached_port, GATEWAY_ROUTE_CACHE_SECONDS="0")
    processes = [gateway, uncached, agent, *upstreams]
    direct_url, gateway_url = f"http://127.0.0.1:{upstream_port}", f"http://127.0.0.1:{gateway_port}"
    agent_url = f"http://127.0.0.1:{agent_port}"
    try:
        wait_for(f"{direct_url}/health", upstreams[0], "the upstream")
        wait_for(f"http://127.0.0.1:{other_port}/health", upstreams[1], "the second upstream")
        wait_for(f"http://127.0.0.1:{bare_port}/health", upstreams[2], "the upstream that does no work")
        wait_for(f"{agent_url}/health", agent, "the sample agent")
        wait_for(f"{gateway_url}/healthz", gateway, "the gateway")
        wait_for(f"http://127.0.0.1:{uncached_port}/healthz", uncached, "the gateway without a route cache")
        workload = routed_workload(f"127.0.0.1:{upstream_port}")
        on_agent = routed_workload(f"127.0.0.1:{agent_port}")
        on_bare = routed_workload(f"127.0.0.1:{bare_port}")
        host = {"Host": f"{workload.id}.workloads.{settings.WORKLOAD_DOMAIN}"}
        agent_host = {"Host": f"{on_agent.id}.workloads.{settings.WORKLOAD_DOMAIN}"}
        bare_host = {"Host": f"{on_bare.id}.workloads.{settings.WORKLOAD_DOMAIN}"}
        print(f"upstream {direct_url} (bench/upstream.py), gateway {gateway_url}, workload {host['Host']}")
        print(
            f"GETs for {args.seconds:g} s each, after a {WARMUP_SECONDS:g} s warm-up of the keep-alive pools;"
            f" the upstream takes {UPSTREAM_WORK_SECONDS * 1000:g} ms (no CPU) per answer"
        )

        loads: dict[int, tuple[Load, Load]] = {}
        for concurrency in CONNECTIONS:
            direct = Load(f"{direct_url}/bench", {}, seconds=args.seconds, concurrency=concurrency)
            through = Load(f"{gateway_url}/bench", host, seconds=args.seconds, concurrency=concurrency)
            loads[concurrency] = (direct, through)
            print(f"{concurrency} connections:")
            print(direct.line("direct"))
            print(through.line("gateway"))
            print(
                f"  added: p50 {ms(through.p(0.5) - direct.p(0.5))}, p99 {ms(through.p(0.99) - direct.p(0.99))}"
                f" (mean {ms(statistics.fmean(through.latencies) - statistics.fmean(direct.latencies))})"
                f"; ratio {through.rps / direct.rps:.2f}"
            )
        print("capacity: an upstream that does no work at all, 64 connections (everything CPU-bound, shared cores):")
        bare_direct = Load(f"http://127.0.0.1:{bare_port}/bench", {}, seconds=args.seconds, concurrency=64)
        bare_through = Load(f"{gateway_url}/bench", bare_host, seconds=args.seconds, concurrency=64)
        print(bare_direct.line("direct"))
        print(bare_through.line("gateway"))
        print("the sample agent (python -m agent) as the upstream, 16 connections:")
        print(Load(f"{agent_url}/bench", {}, seconds=args.seconds, concurrency=16).line("direct"))
        print(Load(f"{gateway_url}/bench", agent_host, seconds=args.seconds, concurrency=16).line("gateway"))
        no_cache = Load(f"http://127.0.0.1:{uncached_port}/bench", host, seconds=args.seconds, concurrency=16)
        print("route cache:")
        print(no_cache.line("gateway, no route cache"))
        print(f"  (16 connections; with the cache: {loads[16][1].rps:.1f} req/s, p99 {ms(loads[16][1].p(0.99))})")
        followed = asyncio.run(
            reroute_seconds(gateway_url, host["Host"], workload, f"127.0.0.1:{other_port}", "i-other")
        )
        print(
            f"  a re-route is followed {ms(followed)} after the KV changed "
            f"(route cache {settings.GATEWAY_ROUTE_CACHE_SECONDS:g} s)"
        )
        asyncio.run(reroute_seconds(gateway_url, host["Host"], workload, f"127.0.0.1:{upstream_port}", "i-bench"))

        ws_direct = asyncio.run(websocket_echoes(f"ws://127.0.0.1:{upstream_port}/echo", {}, count=WEBSOCKET_ECHOES))
        ws_through = asyncio.run(
            websocket_echoes(f"ws://127.0.0.1:{gateway_port}/w/{workload.id}/echo", {}, count=WEBSOCKET_ECHOES)
        )
        print(f"websocket echo round trip ({WEBSOCKET_ECHOES} messages on one connection):")
        for label, trips in (("direct", ws_direct), ("gateway", ws_through)):
            print(f"  {label:<8} p50 {ms(percentile(trips, 0.5))}  p99 {ms(percentile(trips, 0.99))}")

        print("streaming, 1 MiB at 1 MB/s (16 chunks of 64 KiB):")
        for label, base, headers in (("direct", direct_url, {}), ("gateway", gateway_url, host)):
            first, total, size = asyncio.run(stream_timing(f"{base}/stream?{STREAM_QUERY}", headers))
            print(f"  {label:<8} first byte {ms(first)}  end {ms(total)}  {size} bytes")
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=15)
        var_dir.cleanup()

    direct, through = loads[64]
    overflows = sum(int(load.overflows) for pair in loads.values() for load in pair if load.overflows.isdigit())
    print(
        "note: the ~1 s p99 of earlier runs was the sample agent's listen backlog (socketserver's 5) with a new"
        " connection per request (it answered HTTP/1.0): a burst of connects overflowed the queue, the kernel"
        " dropped SYNs and clients retried them after its 1 s retransmission timeout. The agent now keeps"
        f" connections alive with a backlog of 1024; listen overflows in the loads above: {overflows}."
    )
    print(f"gateway ratio: {through.rps / direct.rps:.2f} (target > 0.9)")


if __name__ == "__main__":
    main()
