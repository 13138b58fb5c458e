"""The readiness sweep: one pass looks at every run waiting for its instance to start or its workload to answer.

A run waiting in ``wait-for-instance`` or ``wait-for-workload-ready`` re-checks on its own only
every ``READINESS_POLL_SECONDS`` (a fallback). With thousands of instances booting at once, a check
per run every few seconds would be thousands of tasks a second; instead, every
``READINESS_SWEEP_SECONDS`` beat runs this sweep:

* the instances still starting, read together per provider and region
  (``CloudAdapter.get_instance_statuses``: one DescribeInstances for 1,000 on AWS), on clouds
  that read many at once (``describes_in_batches``); an instance whose create operation is still
  followed (GCP, Azure) keeps its own checks;
* the workloads whose instance is up: ``GET /health`` of all of them at once
  (``workloads.health.check_many``, as the health sweep does).

Every run whose instance left ``pending`` (started, or failed) or whose workload answers is woken
(``engine.workflow_run_wake``; not again until that wake has run, however far behind the queue is,
or ``READINESS_POLL_SECONDS`` has passed: a wake lost with a dead worker), and so is every run
whose wait reached its limit (it then gives up):
its wait step runs now and the run goes on. Runs still waiting cost nothing until the next sweep.

Each pass marks the sweep alive in the routing KV (:func:`sweep_watching`); the wait steps then
re-check on their own only every ``READINESS_POLL_SECONDS`` (the fallback), and every 5 s when no
sweep runs. Passes are paced (``arbitrage.pacing``): two never overlap and a long one spaces out the
next, so with tens of thousands of runs waiting the sweep takes a bounded share of a worker and the
wakes reach the runs a few seconds later.
"""

from __future__ import annotations

from collections import defaultdict

from django.conf import settings
from django.core.cache import caches
from django.utils import timezone

from arbitrage.pacing import paced
from placement.clouds.base import CloudNotConfigured, InstanceState, TransientCloudError, get_cloud
from workloads.health import check_many
from workloads.instance_status import instance_statuses_read
from workloads.models import RunStatus, StepStatus, WorkflowStep
from workloads.workflows.engine import WORKFLOWS, scaled, workflow_run_wake

INSTANCE_STEP = "wait-for-instance"
READY_STEP = "wait-for-workload-ready"
CREATE_STEP = "provision-cloud-resources"

ALIVE_KEY = "readiness-sweep:alive"


def sweep_watching() -> bool:
    """Whether a readiness sweep has run lately: the wait steps may then leave the re-checks to it."""
    return bool(caches["routing"].get(ALIVE_KEY))


def _mark_alive() -> None:
    caches["routing"].set(ALIVE_KEY, 1, timeout=max(10, 5 * settings.READINESS_SWEEP_SECONDS))


def _waiting(step_name: str) -> tuple[dict, list]:
    """The runs waiting in ``step_name``, and those past their wait's limit.

    Run id -> (kind, chain generation, the wait's checks so far).
    """
    waiting, expired = {}, []
    now = timezone.now()
    for run_id, kind, generation, started_at, attempts in (
        WorkflowStep.objects.filter(name=step_name, status=StepStatus.RUNNING, run__status=RunStatus.RUNNING)
        .order_by("run__created_at")
        .values_list("run_id", "run__kind", "run__chain_generation", "started_at", "attempts")
    ):
        waiting[run_id] = (kind, generation, attempts)
        poll = WORKFLOWS[kind].step(step_name).poll
        limit = scaled(poll.every_seconds * poll.max_checks) if poll is not None else None
        if limit is not None and started_at is not None and (now - started_at).total_seconds() >= limit:
            expired.append(run_id)
    return waiting, expired


def _results(run_ids: list, step_name: str) -> dict:
    return dict(
        WorkflowStep.objects.filter(run_id__in=run_ids, name=step_name, status=StepStatus.SUCCEEDED).values_list(
            "run_id", "result"
        )
    )


def runs_started(run_ids: list) -> list:
    """The runs among ``run_ids`` whose instance is no longer pending (or is gone)."""
    created = _results(run_ids, CREATE_STEP)
    by_region: dict[tuple[str, str], list] = defaultdict(list)
    for run_id in run_ids:
        result = created.get(run_id) or {}
        if result.get("instance_id") and not result.get("operation"):
            by_region[(result["provider"], result["region"])].append(run_id)
    started = []
    for (provider, region), runs in by_region.items():
        try:
            cloud = get_cloud(provider)
        except CloudNotConfigured:
            continue
        if not cloud.describes_in_batches:
            continue
        try:
            # Left in the routing KV too: the woken runs' own checks read them from there.
            statuses = instance_statuses_read(
                provider=provider, region=region, instance_ids=[created[run_id]["instance_id"] for run_id in runs]
            )
        except TransientCloudError:
            continue  # the runs' own checks, and the next sweep, ask again
        for run_id in runs:
            info = statuses.get(created[run_id]["instance_id"])
            if info is None or info.state is not InstanceState.PENDING:
                started.append(run_id)
    return started


def runs_answering(run_ids: list) -> list:
    """The runs among ``run_ids`` whose workload answers its health check."""
    addresses = {run_id: (result or {}).get("address") for run_id, result in _results(run_ids, INSTANCE_STEP).items()}
    runs = [run_id for run_id in run_ids if addresses.get(run_id)]
    results = check_many(
        [addresses[run_id] for run_id in runs],
        timeout=settings.HEALTH_CHECK_TIMEOUT_SECONDS,
        concurrency=settings.HEALTH_CHECK_CONCURRENCY,
    )
    return [run_id for run_id, result in zip(runs, results, strict=True) if result.ok]


def readiness_sweep_run() -> dict[str, int]:
    """Look at every waiting run once; wake those whose wait is over. Counts of waiting and woken runs."""
    _mark_alive()
    (starting, starting_expired), (booting, booting_expired) = _waiting(INSTANCE_STEP), _waiting(READY_STEP)
    started = set(runs_started(list(starting)) if starting else []) | set(starting_expired)
    answering = set(runs_answering(list(booting)) if booting else []) | set(booting_expired)
    over = [(run_id, INSTANCE_STEP, *starting[run_id]) for run_id in started]
    over += [(run_id, READY_STEP, *booting[run_id]) for run_id in answering]
    kv = caches["routing"]
    keys = {run_id: f"readiness-woken:{run_id}:{step}:{generation}" for run_id, step, _, generation, _ in over}
    sent = kv.get_many(list(keys.values()))
    woken: dict[str, int] = {}
    for run_id, step, kind, generation, attempts in over:
        if sent.get(keys[run_id]) == attempts:
            continue  # woken already, and that wake has not run yet: it is queued behind other steps
        workflow_run_wake(run_id=run_id, kind=kind, generation=generation, waiting_step=step)
        woken[keys[run_id]] = attempts
    if woken:
        # A wake that never runs (lost with a dead worker) is sent again once this expires.
        kv.set_many(woken, timeout=scaled(settings.READINESS_POLL_SECONDS))
    return {"starting": len(starting), "booting": len(booting), "woken": len(woken)}


def readiness_sweep_tick() -> dict[str, int]:
    """The beat's task: a pass when its turn is due (``arbitrage.pacing``); the sweep is marked alive either way."""
    counts = paced("readiness-sweep", readiness_sweep_run, lock_seconds=120)
    if counts is None:
        _mark_alive()  # a skipped turn: the sweep is still on, the waits keep leaving their checks to it
        return {"skipped": 1}
    return counts
