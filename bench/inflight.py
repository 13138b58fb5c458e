"""How many workloads can provision at once without workers blocking on waits.

Starts what it needs: a throwaway database (a temporary SQLite file, or a
`bench_inflight` database beside DATABASE_URL's when that is set), the bundled
catalog, and two Celery worker processes. Submits N workloads whose local
instances take D seconds to boot, and measures the wall time until all are
RUNNING. If a worker blocked while waiting, two workers would take about
N x D / 2; since waits re-check with a countdown instead, the whole batch
finishes close to D.

    python bench/inflight.py [--workloads 200] [--boot-delay 60]

Last line: `inflight ratio: <wall / D> (target < 2)`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", type=int, default=200)
    # 60 s is a typical spot VM boot; starting the 200 real local processes alone takes ~20 s of
    # this machine's 2 cores, which a much shorter D would measure instead of the workflows.
    parser.add_argument("--boot-delay", type=float, default=60.0, help="D: seconds a local instance takes to boot")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    if args.workloads < 1 or args.boot_delay <= 0:
        parser.error("--workloads must be >= 1 and --boot-delay > 0")

    var_dir = Path(tempfile.mkdtemp(prefix="bench-inflight-"))
    env = {
        "ARBITRAGE_VAR_DIR": str(var_dir),
        "DJANGO_SETTINGS_MODULE": "arbitrage.settings",
        "LOCAL_CLOUD_BOOT_DELAY_MS": str(int(args.boot_delay * 1000)),
        "LOG_LEVEL": "WARNING",
    }
    database_url = os.environ.get("DATABASE_URL", "")
    if database_url:
        env["DATABASE_URL"] = urlunsplit(urlsplit(database_url)._replace(path="/bench_inflight"))
        _recreate_postgres_database(database_url, "bench_inflight")
    os.environ.update(env)

    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("catalog_load", verbosity=0)

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from accounts.services import api_key_create, customer_create
    from arbitrage.celery import app
    from placement.clouds import local
    from workloads.models import Workload, WorkloadStatus
    from workloads.services import workload_create

    app.control.purge()
    customer = customer_create(name="bench", max_concurrent_workloads=args.workloads + 10)
    api_key_create(customer=customer)
    requirements = {"vcpu": 2, "memory_gb": 4}
    config = {"health_check_port": 8080, "storage": {"enabled": False, "quota_gb": 10, "retention_days": 30}}

    workers = [_start_worker(var_dir, env, f"bench{i}") for i in (1, 2)]
    try:
        # One run first, alone, to count its database queries (the workers' queries are not visible here,
        # so this run's steps execute in this process, exactly as a worker would run them).
        queries = count_provisioning_queries(customer=customer, requirements=requirements, config=config)

        started = time.monotonic()
        started_wall = time.time()
        with CaptureQueriesContext(connection):
            ids = [
                workload_create(customer=customer, name=f"bench-{i}", requirements=requirements, config=config)[0].id
                for i in range(args.workloads)
            ]
        submitted = time.monotonic() - started
        deadline = started + args.timeout
        while True:
            counts = dict.fromkeys(WorkloadStatus.values, 0)
            for status in Workload.objects.filter(id__in=ids).values_list("status", flat=True):
                counts[status] += 1
            if counts[WorkloadStatus.RUNNING] + counts[WorkloadStatus.FAILED] == len(ids):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out: {counts}")
            time.sleep(0.25)
        wall = time.monotonic() - started
        milestones = _milestones(ids, started_wall)
        if counts[WorkloadStatus.FAILED]:
            failed = Workload.objects.filter(id__in=ids, status=WorkloadStatus.FAILED).first()
            raise SystemExit(f"{counts[WorkloadStatus.FAILED]} workloads failed, e.g.: {failed.failure_reason}")
    finally:
        for worker in workers:
            os.killpg(worker.pid, signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
        local.terminate_all()
        connection.close()
        if database_url:
            _drop_postgres_database(database_url, "bench_inflight")
        shutil.rmtree(var_dir, ignore_errors=True)

    database = "postgresql" if database_url else "sqlite"
    print(f"database: {database}, broker: {'redis' if os.environ.get('CELERY_BROKER_URL') else 'filesystem'}")
    print(f"workloads: {args.workloads}, boot delay D: {args.boot_delay:.1f} s, workers: 2 processes")
    print(f"submitted in {submitted:.1f} s; all RUNNING after {wall:.1f} s")
    print(f"database queries per provisioning run: {queries}")
    for step, (p50, last) in milestones.items():
        print(f"  {step:<28} done after p50 {p50:6.1f} s, last {last:6.1f} s")
    print(f"blocking workers would need about {args.workloads * args.boot_delay / 2:.0f} s")
    print(f"inflight ratio: {wall / args.boot_delay:.2f} (target < 2)")


def _milestones(ids, started_wall: float) -> dict[str, tuple[float, float]]:
    """For each step, when the runs finished it (seconds after submission): median and last."""
    from workloads.models import WorkflowStep

    finished: dict[str, list[float]] = {}
    rows = WorkflowStep.objects.filter(run__workload_id__in=ids).values_list("name", "position", "finished_at")
    order = {}
    for name, position, finished_at in rows:
        order[name] = position
        if finished_at is not None:
            finished.setdefault(name, []).append(finished_at.timestamp() - started_wall)
    result = {}
    for name in sorted(finished, key=order.get):
        times = sorted(finished[name])
        result[name] = (times[len(times) // 2], times[-1])
    return result


def count_provisioning_queries(*, customer=None, requirements=None, config=None) -> int:
    """Database queries of one provisioning run, its steps executed here one by one as a worker would.

    A wait is executed again once what it waits for holds, as the readiness sweep wakes it (the
    checks made to know that are not counted: the sweep makes them for every run at once).
    """
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from workloads.models import StepStatus, WorkflowStep
    from workloads.services import workload_create
    from workloads.workflows.engine import Done, RetryLater, Stop, workflow_step_execute
    from workloads.workflows.readiness import INSTANCE_STEP, READY_STEP, runs_answering, runs_started

    def awaited_holds(run_id, step_name: str) -> bool:
        if step_name == INSTANCE_STEP:
            return bool(runs_started([run_id]))
        if step_name == READY_STEP:
            return bool(runs_answering([run_id]))
        return True

    if customer is None:
        from accounts.services import customer_create

        customer = customer_create(name=f"queries probe {time.time_ns()}")
    requirements = requirements or {"vcpu": 2, "memory_gb": 4}
    config = config or {"storage": {"enabled": False}}
    queries = 0
    with CaptureQueriesContext(connection) as captured:
        # Without on_commit enqueueing: this run is driven here, step by step.
        from django.db import transaction

        with transaction.atomic():
            workload, _ = workload_create(
                customer=customer, name="bench-probe", requirements=requirements, config=config
            )
            run = workload.workflow_runs.get()
            run.chain_generation = 99  # the workers' copy of the chain stops at once
            run.save(update_fields=["chain_generation"])
    queries += len(captured.captured_queries)
    for step_name in WorkflowStep.objects.filter(run=run).order_by("position").values_list("name", flat=True):
        while True:
            with CaptureQueriesContext(connection) as captured:
                outcome = workflow_step_execute(run_id=run.id, step_name=step_name, generation=99)
            queries += len(captured.captured_queries)
            if isinstance(outcome, Done):
                break
            if isinstance(outcome, Stop):
                raise SystemExit(f"probe run stopped at {step_name}: {outcome.reason}")
            assert isinstance(outcome, RetryLater)
            waiting = WorkflowStep.objects.filter(run=run, status=StepStatus.RUNNING).values_list("name", flat=True)
            waiting_step = waiting.first() or step_name
            deadline = time.monotonic() + 600
            while not awaited_holds(run.id, waiting_step) and time.monotonic() < deadline:
                time.sleep(0.5)
    assert not WorkflowStep.objects.filter(run=run).exclude(status=StepStatus.SUCCEEDED).exists()
    return queries


def _start_worker(var_dir: Path, env: dict[str, str], name: str) -> subprocess.Popen:
    log = (var_dir / f"{name}.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "arbitrage", "worker", "--pool", "prefork", "--concurrency", "1",
         "--loglevel", "WARNING", "--hostname", f"{name}@%h", "--without-gossip", "--without-mingle",
         "--without-heartbeat"],
        cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def _admin_connection(database_url: str):
    import psycopg

    admin_url = urlunsplit(urlsplit(database_url)._replace(path="/postgres"))
    return psycopg.connect(admin_url, autocommit=True)


def _recreate_postgres_database(database_url: str, name: str) -> None:
    with _admin_connection(database_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def _drop_postgres_database(database_url: str, name: str) -> None:
    with _admin_connection(database_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
