"""Many workloads in flight at once, on services, with the local cloud's fleet host.

Starts what it needs: a throwaway PostgreSQL database beside DATABASE_URL's (default
``postgres://postgres@127.0.0.1:5432/postgres``), two Redis databases of REDIS_URL's server
(default ``redis://127.0.0.1:6379``, DBs 12 and 13, flushed: the routing KV and the broker), the
bundled catalog, the web (gunicorn), ``--workers`` Celery worker processes (default 2), beat, and the
local cloud in its fleet-host mode (``LOCAL_CLOUD_HOST_MODE=fleet``: one process hosts every
instance). Then it submits N workloads through the REST API (``POST /api/v1/workloads/batch``,
``--batch`` at a time; ``--batch 1``: one ``POST /api/v1/workloads`` each) whose instances take D seconds to boot,
and reports: the time until all are RUNNING, provisioning runs per second, database queries and
Celery tasks per provisioning run, the API's p50/p99 for ``GET /api/v1/workloads`` while they
start, the peak RSS of the workers and of the fleet host, and the health sweep's time over all N.
Then it terminates every workload through the API and checks that no instance is left and that
each instance was billed exactly once.

    python bench/scale.py [--workloads 10000] [--boot-delay 120] [--batch 100]

Last line: ``scale ratio: <wall / D> (target < 3)``.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"
KV_DB, BROKER_DB = 12, 13
# What each workload asks for: small, no storage, progress reported rarely (the fleet's reports
# would otherwise be most of the web's load, which is not what this measures).
WORKLOAD = {
    "requirements": {"vcpu": 2, "memory_gb": 4},
    "config": {"storage": {"enabled": False}, "env": {"AGENT_PROGRESS_SECONDS": "3600"}},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", type=int, default=10_000, help="N: workloads to submit")
    parser.add_argument("--boot-delay", type=float, default=120.0, help="D: seconds a local instance takes to boot")
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes")
    parser.add_argument("--submitters", type=int, default=16, help="concurrent API clients submitting")
    parser.add_argument(
        "--batch",
        type=int,
        default=100,
        help="workloads per POST /api/v1/workloads/batch (1: one POST /workloads each)",
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="give up after this many seconds")
    args = parser.parse_args()
    if args.workloads < 1 or args.boot_delay <= 0 or args.workers < 1 or args.submitters < 1:
        parser.error("--workloads, --workers and --submitters must be >= 1 and --boot-delay > 0")
    if not 1 <= args.batch <= 500:
        parser.error("--batch must be between 1 and 500")

    redis_base = _redis_server(os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL)
    web_port = _free_port()
    env = {
        "DATABASE_URL": os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
        "REDIS_URL": f"{redis_base}/{KV_DB}",
        "CELERY_BROKER_URL": f"{redis_base}/{BROKER_DB}",
        "LOCAL_CLOUD_HOST_MODE": "fleet",
        "LOCAL_CLOUD_BOOT_DELAY_MS": str(int(args.boot_delay * 1000)),
        "PUBLIC_API_URL": f"http://127.0.0.1:{web_port}",
        "LOG_LEVEL": "WARNING",
        "API_THROTTLE_RATE": "1000000/minute",  # one customer submits them all
    }
    os.environ.update(env)
    _flush_redis(env["REDIS_URL"], env["CELERY_BROKER_URL"])

    from bench.throwaway import throwaway_database

    description, cleanup = throwaway_database("scale")
    env["DATABASE_URL"] = os.environ["DATABASE_URL"]
    env["ARBITRAGE_VAR_DIR"] = os.environ["ARBITRAGE_VAR_DIR"]
    var_dir = Path(env["ARBITRAGE_VAR_DIR"])

    from django.core.management import call_command

    call_command("catalog_load", verbosity=0)
    from accounts.services import api_key_create, customer_create

    customer = customer_create(name="scale bench", max_concurrent_workloads=args.workloads + 10)
    _, api_key = api_key_create(customer=customer)

    # One run alone first, its steps executed in this process, to count its queries: before the
    # workers and beat start, so that no readiness sweep wakes it (its waits re-check on their own).
    from bench.inflight import count_provisioning_queries

    queries = count_provisioning_queries(requirements=WORKLOAD["requirements"], config=WORKLOAD["config"])

    processes: dict[str, subprocess.Popen] = {}
    try:
        processes["web"] = _start(var_dir, "web", [
            sys.executable, "-m", "gunicorn", "arbitrage.wsgi:application", "--bind", f"127.0.0.1:{web_port}",
            "--workers", "2", "--threads", "8", "--log-level", "warning"])  # fmt: skip
        for i in range(args.workers):
            processes[f"worker{i + 1}"] = _start(var_dir, f"worker{i + 1}", [
                sys.executable, "-m", "celery", "-A", "arbitrage", "worker", "--pool", "prefork", "--concurrency",
                "1", "--loglevel", "WARNING", "--hostname", f"scale{i + 1}@%h", "--without-gossip",
                "--without-mingle", "--without-heartbeat"])  # fmt: skip
        processes["beat"] = _start(var_dir, "beat", [
            sys.executable, "-m", "celery", "-A", "arbitrage", "beat", "--loglevel", "WARNING",
            "--pidfile", str(var_dir / "beat.pid")])  # fmt: skip
        _wait_for_web(web_port)
        report = _run(args, api_key, web_port, processes, queries)
    finally:
        for process in processes.values():
            _stop(process)
        from placement.clouds import local

        local.terminate_all()
        cleanup()

    print(f"database: {description}; routing KV and broker: Redis DBs {KV_DB} and {BROKER_DB} of {redis_base}")
    print(f"workloads: {args.workloads}, boot delay D: {args.boot_delay:.0f} s, workers: {args.workers} processes")
    for line in report["lines"]:
        print(line)
    print(f"scale ratio: {report['wall'] / args.boot_delay:.2f} (target < 3)")


def _run(args, api_key: str, web_port: int, processes, queries: int) -> dict:
    import httpx

    from billing.models import UsageRecord
    from placement.clouds.base import InstanceState
    from workloads.models import (
        RunStatus,
        WorkflowKind,
        WorkflowRun,
        WorkflowStep,
        Workload,
        WorkloadInstance,
        WorkloadStatus,
    )
    from workloads.recovery import health_sweep_run

    base = f"http://127.0.0.1:{web_port}/api/v1"
    headers = {"Authorization": f"Bearer {api_key}"}
    lines: list[str] = []
    sampler = _Sampler(base=base, headers=headers, processes=processes)
    sampler.start()

    started = time.monotonic()
    with ThreadPoolExecutor(args.submitters) as pool, httpx.Client(headers=headers, timeout=60) as client:

        def submit(first: int) -> list[str]:
            numbers = range(first, min(first + args.batch, args.workloads))
            if args.batch == 1:
                url, body = f"{base}/workloads", {"name": f"scale-{first}", **WORKLOAD}
            else:
                url, body = (
                    f"{base}/workloads/batch",
                    {"workloads": [{"name": f"scale-{i}", **WORKLOAD} for i in numbers]},
                )
            answer = client.post(url, json=body, headers={"Idempotency-Key": str(uuid.uuid4())})
            if answer.status_code != 201:
                raise SystemExit(f"submitting workloads from {first}: HTTP {answer.status_code} {answer.text[:300]}")
            made = answer.json()
            return [made["id"]] if args.batch == 1 else [workload["id"] for workload in made["workloads"]]

        ids = [i for made in pool.map(submit, range(0, args.workloads, args.batch)) for i in made]
    submitted = time.monotonic() - started
    counts = _wait_until(ids, {WorkloadStatus.RUNNING}, started + args.timeout)
    wall = time.monotonic() - started
    sampler.phase = "running"
    cpu_lines = sampler.cpu_lines(wall)
    failed = counts.get(WorkloadStatus.FAILED, 0)
    if failed:
        example = Workload.objects.filter(id__in=ids, status=WorkloadStatus.FAILED).first()
        raise SystemExit(f"{failed} workloads failed, e.g.: {example.failure_reason}")

    # RUNNING comes a step before the run ends (health monitoring starts last): let the runs finish.
    finish_by = time.monotonic() + 120
    provisioning = WorkflowRun.objects.filter(workload_id__in=ids, kind=WorkflowKind.PROVISION)
    while provisioning.filter(status=RunStatus.RUNNING).exists() and time.monotonic() < finish_by:
        time.sleep(0.5)
    runs = WorkflowStep.objects.filter(run__workload_id__in=ids, run__kind=WorkflowKind.PROVISION)
    step_executions = sum(runs.values_list("attempts", flat=True))
    tasks = _tasks_run()
    sweep_started = time.monotonic()
    sweep = health_sweep_run()
    sweep_seconds = time.monotonic() - sweep_started

    terminate_started = time.monotonic()
    with ThreadPoolExecutor(args.submitters) as pool, httpx.Client(headers=headers, timeout=60) as client:

        def terminate(workload_id: str) -> None:
            answer = client.post(f"{base}/workloads/{workload_id}/terminate")
            if answer.status_code not in (200, 202):
                raise SystemExit(f"terminating {workload_id}: HTTP {answer.status_code} {answer.text[:300]}")

        list(pool.map(terminate, ids))
    _wait_until(ids, {WorkloadStatus.TERMINATED}, time.monotonic() + args.timeout)
    terminated = time.monotonic() - terminate_started
    sampler.stop()

    from placement.clouds import local

    live_states = (InstanceState.PENDING, InstanceState.RUNNING, InstanceState.STOPPING)
    instances = WorkloadInstance.objects.filter(workload_id__in=ids)
    ours = set(instances.values_list("instance_id", flat=True))
    left = [
        info.instance_id for info in local.instances_all() if info.instance_id in ours and info.state in live_states
    ]
    live = instances.filter(terminated_at__isnull=True).count()
    settled = time.monotonic() + 60  # a bill is written just after its instance's release commits
    while True:
        bills = dict.fromkeys(instances.values_list("id", flat=True), 0)
        for instance_id in UsageRecord.objects.filter(instance__workload_id__in=ids).values_list(
            "instance_id", flat=True
        ):
            bills[instance_id] += 1
        not_billed_once = {pk: count for pk, count in bills.items() if count != 1}
        if not not_billed_once or time.monotonic() > settled:
            break
        time.sleep(1.0)

    how = "one POST each" if args.batch == 1 else f"batches of {args.batch}"
    lines.append(f"submitted through the API in {submitted:.1f} s ({args.workloads / submitted:.0f}/s, {how})")
    lines.append(f"all RUNNING after {wall:.1f} s: {args.workloads / wall:.1f} provisioning runs per second")
    lines.append(f"database queries per provisioning run, run alone, its waits woken once each: {queries}")
    lines.append(
        f"Celery tasks per provisioning run: {tasks / args.workloads:.1f} (every task the workers ran until all "
        f"RUNNING, sweeps included); step executions per run: {step_executions / args.workloads:.1f}"
    )
    lines.extend(cpu_lines)
    lines.append(sampler.latency_line())
    lines.extend(sampler.rss_lines())
    lines.append(f"health sweep over all: {sweep.checked} checked, {sweep.healthy} healthy in {sweep_seconds:.1f} s")
    lines.append(f"all TERMINATED {terminated:.1f} s after the first terminate")
    lines.append(
        f"left behind: {len(left)} local instances, {live} instance rows not ended; "
        f"instances billed other than once: {len(not_billed_once)} of {len(bills)}"
        + (f" (bills per instance: {sorted(not_billed_once.values())})" if not_billed_once else "")
    )
    if left or live or not_billed_once:
        raise SystemExit("\n".join([*lines, "leaked or mis-billed instances (see above)"]))
    return {"wall": wall, "lines": lines}


class _Sampler(threading.Thread):
    """While the workloads start: the API's list latency every half second, and the processes' RSS."""

    def __init__(self, *, base: str, headers: dict[str, str], processes) -> None:
        super().__init__(daemon=True)
        self.base, self.headers, self.processes = base, headers, processes
        self.latencies: list[float] = []
        self.peak_rss: dict[str, int] = {}
        self.phase = "starting"
        self._stopped = threading.Event()
        self.cpu_at_start = {name: _cpu_tree(process.pid) for name, process in processes.items()}
        self.machine_at_start = _machine_busy()

    def cpu_lines(self, wall: float) -> list[str]:
        """CPU seconds each process (with its children) and the whole machine spent since the start."""
        used = {
            name: _cpu_tree(process.pid) - self.cpu_at_start.get(name, 0.0) for name, process in self.processes.items()
        }
        host = _fleet_host_pid()
        if host:
            used["fleet host"] = _cpu_tree(host)  # started by the first create, after the sampler
        machine = _machine_busy() - self.machine_at_start
        per = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in used.items())
        return [
            f"CPU until all RUNNING: {per}; the machine {machine:.0f} s of {wall * (os.cpu_count() or 1):.0f} s "
            f"({os.cpu_count()} CPUs x wall)"
        ]

    def run(self) -> None:
        import httpx

        with httpx.Client(headers=self.headers, timeout=60) as client:
            while not self._stopped.wait(0.5):
                if self.phase == "starting":
                    began = time.monotonic()
                    client.get(f"{self.base}/workloads", params={"page_size": 50})
                    self.latencies.append((time.monotonic() - began) * 1000)
                for name, pid in self._pids().items():
                    self.peak_rss[name] = max(self.peak_rss.get(name, 0), _rss_tree(pid))

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=10)

    def _pids(self) -> dict[str, int]:
        pids = {name: process.pid for name, process in self.processes.items() if name.startswith("worker")}
        host = _fleet_host_pid()
        if host:
            pids["fleet host"] = host
        return pids

    def latency_line(self) -> str:
        if len(self.latencies) < 2:
            return "GET /api/v1/workloads while they start: too few samples"
        ordered = sorted(self.latencies)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        return (
            f"GET /api/v1/workloads while they start: p50 {statistics.median(ordered):.0f} ms, "
            f"p99 {p99:.0f} ms ({len(ordered)} samples)"
        )

    def rss_lines(self) -> list[str]:
        workers = [rss for name, rss in self.peak_rss.items() if name.startswith("worker")]
        lines = [f"peak RSS of the workers (with their pool processes): {', '.join(_mb(r) for r in workers)}"]
        host = self.peak_rss.get("fleet host")
        lines.append(f"peak RSS of the fleet host: {_mb(host) if host else 'not seen'}")
        return lines


def _mb(size: int) -> str:
    return f"{size / 2**20:.0f} MB"


def _tree(pid: int, measure):
    """``measure`` of a process plus that of its live children (a prefork worker's pool is its children)."""
    total = measure(pid)
    for child in Path(f"/proc/{pid}/task").glob("*/children"):
        for child_pid in child.read_text().split():
            total += measure(int(child_pid))
    return total


def _rss_tree(pid: int) -> int:
    """Resident bytes of a process and its children."""
    return _tree(pid, _rss)


def _cpu_tree(pid: int) -> float:
    """CPU seconds (user + system) of a process and its live children."""
    return _tree(pid, _cpu)


def _cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0.0
    # utime, stime, cutime, cstime: fields 14-17 of proc(5), counted after the command name.
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _machine_busy() -> float:
    """CPU seconds the whole machine spent busy (not idle or waiting on I/O) since boot."""
    values = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def _tasks_run() -> int:
    """Tasks the workers have run so far, by their own count (``celery inspect stats``)."""
    from arbitrage.celery import app

    stats = app.control.inspect(timeout=5).stats() or {}
    return sum(sum(worker.get("total", {}).values()) for worker in stats.values())


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def _fleet_host_pid() -> int | None:
    from placement.clouds.local.fleet_client import host_pid

    return host_pid()


def _wait_until(ids: list[str], states: set[str], deadline: float) -> dict[str, int]:
    from workloads.models import Workload, WorkloadStatus

    while True:
        counts: dict[str, int] = {}
        for status in Workload.objects.filter(id__in=ids).values_list("status", flat=True):
            counts[status] = counts.get(status, 0) + 1
        done = sum(counts.get(state, 0) for state in states) + counts.get(WorkloadStatus.FAILED, 0)
        if done == len(ids):
            return counts
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {sorted(states)}: {counts}")
        time.sleep(1.0)


def _start(var_dir: Path, name: str, argv: list[str]) -> subprocess.Popen:
    log = (var_dir / f"{name}.log").open("ab")
    return subprocess.Popen(
        argv, cwd=ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def _wait_for_web(port: int) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"the web did not answer on 127.0.0.1:{port} within 60 s")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _redis_server(url: str) -> str:
    """redis://host:port of ``url``, without its database number."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="", query="", fragment=""))


def _flush_redis(*urls: str) -> None:
    import redis

    for url in urls:
        redis.Redis.from_url(url).flushdb()


if __name__ == "__main__":
    main()
