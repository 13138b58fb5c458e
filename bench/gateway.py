"""Requests per second and latency straight to a workload agent, and through the routing gateway.

    .venv/bin/python bench/gateway.py [--seconds 5] [--concurrency 16]

Runs in the embedded mode in a throwaway directory (SQLite, file-cache routing KV):
starts the sample workload agent (``python -m agent``, what a local-cloud
instance runs) and the gateway (uvicorn, as ``make run`` starts it), routes a
workload to the agent, then drives the same load — one asyncio httpx client,
``--concurrency`` requests in flight, for ``--seconds`` — first directly at the
agent and then at the workload's endpoint name through the gateway. It prints
requests/s both ways and the p50/p99 latency the gateway adds. The last line is
the headline: ``gateway ratio: <gateway rps / direct rps> (target > 0.7)``.
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


async def drive(url: str, headers: dict[str, str], *, seconds: float, concurrency: int) -> tuple[float, list[float]]:
    """(requests/s, latencies in seconds) of ``concurrency`` loops of GETs at ``url`` for ``seconds``."""
    import httpx

    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def loop(until: float, record: bool) -> None:
            nonlocal errors
            while time.monotonic() < until:
                started = time.monotonic()
                response = await client.get(url, headers=headers)
                await response.aread()
                if response.status_code != 200:
                    errors += 1
                elif record:
                    latencies.append(time.monotonic() - started)

        warm_until = time.monotonic() + WARMUP_SECONDS
        await asyncio.gather(*(loop(warm_until, False) for _ in range(concurrency)))
        started = time.monotonic()
        await asyncio.gather(*(loop(started + seconds, True) for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    if errors:
        raise SystemExit(f"{errors} requests to {url} did not answer 200")
    return len(latencies) / elapsed, latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    var_dir = tempfile.TemporaryDirectory(prefix="gateway-bench-")
    setup_django(var_dir.name)
    from django.conf import settings

    agent_port, gateway_port = free_port(), free_port()
    env = {**os.environ, "PORT": str(agent_port), "INSTANCE_ID": "i-bench"}
    devnull = subprocess.DEVNULL
    agent = subprocess.Popen([sys.executable, "-m", "agent"], cwd=ROOT, env=env, stderr=devnull)
    gateway_command = [
        sys.executable, "-m", "uvicorn", "gateway.asgi:application",
        "--host", "127.0.0.1", "--port", str(gateway_port),
        "--no-access-log", "--no-proxy-headers", "--no-server-header", "--no-date-header",
    ]  # fmt: skip
    # The gateway's access line per request is not what is measured.
    gateway_env = {**os.environ, "LOG_LEVEL": "WARNING"}
    gateway = subprocess.Popen(gateway_command, cwd=ROOT, env=gateway_env, stderr=devnull)
    try:
        wait_for(f"http://127.0.0.1:{agent_port}/health", agent, "the agent")
        wait_for(f"http://127.0.0.1:{gateway_port}/healthz", gateway, "the gateway")
        workload = routed_workload(f"127.0.0.1:{agent_port}")
        print(f"agent 127.0.0.1:{agent_port}, gateway 127.0.0.1:{gateway_port}, workload {workload.endpoint}")
        print(f"load: {args.concurrency} concurrent GETs for {args.seconds:g} s each way, after a warm-up")

        direct_rps, direct = asyncio.run(
            drive(f"http://127.0.0.1:{agent_port}/bench", {}, seconds=args.seconds, concurrency=args.concurrency)
        )
        gateway_rps, through = asyncio.run(
            drive(
                f"http://127.0.0.1:{gateway_port}/bench",
                {"Host": f"{workload.id}.workloads.{settings.WORKLOAD_DOMAIN}"},
                seconds=args.seconds,
                concurrency=args.concurrency,
            )
        )
    finally:
        for process in (gateway, agent):
            process.terminate()
            process.wait(timeout=15)
        var_dir.cleanup()

    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.2f} ms"

    print(f"direct:  {direct_rps:8.1f} req/s  p50 {ms(percentile(direct, 0.5))}  p99 {ms(percentile(direct, 0.99))}")
    print(f"gateway: {gateway_rps:8.1f} req/s  p50 {ms(percentile(through, 0.5))}  p99 {ms(percentile(through, 0.99))}")
    print(
        f"added latency: p50 {ms(percentile(through, 0.5) - percentile(direct, 0.5))}, "
        f"p99 {ms(percentile(through, 0.99) - percentile(direct, 0.99))}"
        f" (mean {ms(statistics.fmean(through) - statistics.fmean(direct))})"
    )
    print(f"gateway ratio: {gateway_rps / direct_rps:.2f} (target > 0.7)")


if __name__ == "__main__":
    main()
