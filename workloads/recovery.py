"""Keeping workloads alive: the health sweep, interruptions and the recovery they start (docs/architecture.md §6).

* the health sweep (a beat task) checks every monitored RUNNING workload at
  once; a failing check asks the cloud about the instance: one it reclaimed or
  lost is an interruption (the cloud-side signal), otherwise after
  ``HEALTH_FAILURE_THRESHOLD`` failures in a row the workload is UNHEALTHY;
* interruptions come from the agent (its notice, ``agent_interruption_report``),
  from the cloud (the sweep, reconciliation, interruption warnings) or from an
  operator; each moves the workload to INTERRUPTED or UNHEALTHY and starts its
  recovery: a migration (as many as it takes), or a termination when its recovery
  policy says so;
* a rebalance moves a healthy workload to a cheaper offer.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from celery import current_app
from django.conf import settings
from django.core.cache import caches
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from arbitrage.errors import DomainError
from arbitrage.logs import log_context
from placement.clouds import local
from placement.clouds.base import CloudError, InstanceNotFound, InstanceState, Market, get_cloud
from placement.errors import NoPlacement
from placement.selectors import placement_candidates
from placement.services import pool_block
from workloads.errors import NoCheaperOffer, TransitionRefused
from workloads.health import check_many
from workloads.models import (
    HealthMonitor,
    NotificationType,
    RecoveryPolicy,
    WorkflowKind,
    Workload,
    WorkloadEvent,
    WorkloadInstance,
    WorkloadRouting,
    WorkloadStatus,
)
from workloads.notifications import notification_create, workload_interrupted_payload
from workloads.services import workload_current_instance, workload_transition_locked
from workloads.workflows.engine import workflow_run_create

logger = logging.getLogger(__name__)

GONE = (InstanceState.PREEMPTED, InstanceState.TERMINATED, InstanceState.FAILED)

# The task that asks one workload's agent for a checkpoint (workloads/tasks.py imports this module).
CHECKPOINT_TASK = "workloads.checkpoint_request"
# Health-check counters in the shared KV, read by /metrics (console/metrics.py).
HEALTH_KEY = "metrics:health:{what}:{provider}"


@dataclass(frozen=True)
class SweepReport:
    checked: int
    healthy: int
    failing: int
    unhealthy: int
    interrupted: int


def health_sweep_run() -> SweepReport:
    """Check every active monitor of a RUNNING workload; record results; act on the verdicts.

    A failing check first asks the cloud about the instance: one it reclaimed
    or lost is an interruption (the cloud-side signal). Otherwise, after
    ``HEALTH_FAILURE_THRESHOLD`` failures in a row the workload is UNHEALTHY.
    """
    monitors = list(HealthMonitor.objects.filter(active=True, workload__status=WorkloadStatus.RUNNING))
    results = check_many(
        [monitor.endpoint for monitor in monitors],
        timeout=settings.HEALTH_CHECK_TIMEOUT_SECONDS,
        concurrency=settings.HEALTH_CHECK_CONCURRENCY,
    )
    now = timezone.now()
    failing = []
    for monitor, result in zip(monitors, results, strict=True):
        monitor.last_checked_at = now
        monitor.last_latency_ms = result.latency_ms
        if result.ok:
            monitor.consecutive_failures = 0
            monitor.last_ok_at = now
        else:
            monitor.consecutive_failures += 1
            failing.append((monitor, result))
    HealthMonitor.objects.bulk_update(
        monitors, ["last_checked_at", "last_latency_ms", "consecutive_failures", "last_ok_at"], batch_size=500
    )
    health_checks_record(
        results=[(monitor.provider, result.ok) for monitor, result in zip(monitors, results, strict=True)]
    )

    unhealthy = interrupted = 0
    for monitor, result in failing:
        with log_context(workload_id=str(monitor.workload_id)):
            if _instance_gone(monitor):
                interrupted += workload_interrupt(
                    workload_id=monitor.workload_id, signal="cloud", detail={"health_check": result.error}
                )
            elif monitor.consecutive_failures >= settings.HEALTH_FAILURE_THRESHOLD:
                reason = f"{monitor.consecutive_failures} failed health checks in a row (last: {result.error})"
                unhealthy += workload_mark_unhealthy(workload_id=monitor.workload_id, reason=reason)
    return SweepReport(len(monitors), len(monitors) - len(failing), len(failing), unhealthy, interrupted)


def _instance_gone(monitor: HealthMonitor) -> bool:
    try:
        info = get_cloud(monitor.provider).get_instance_status(monitor.instance_id, monitor.region)
    except InstanceNotFound:
        return True
    except CloudError as error:  # the cloud cannot tell now; the health verdict stands alone
        logger.warning("status of %s unavailable: %s", monitor.instance_id, error)
        return False
    return info.state in GONE


def health_checks_record(*, results: Iterable[tuple[str, bool]]) -> None:
    """Count one sweep's checks, ``(provider, ok)`` each, in the shared KV (never raises)."""
    checked: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    for provider, ok in results:
        label = _provider_label(provider)
        checked[label] += 1
        if not ok:
            failed[label] += 1
    try:
        kv = caches["routing"]
        for what, counts in (("checks", checked), ("failures", failed)):
            for provider, amount in counts.items():
                _kv_increment(kv, HEALTH_KEY.format(what=what, provider=provider), amount)
    except Exception:
        logger.exception("could not count health checks in the KV")


def _kv_increment(kv: Any, key: str, amount: int) -> None:
    # Atomic on Redis (INCRBY); the embedded file cache reads and writes, which only a sweep
    # overlapping another could race.
    kv.add(key, 0, timeout=None)
    try:
        kv.incr(key, amount)
    except ValueError:  # cleared between add and incr
        kv.set(key, amount, timeout=None)


def _provider_label(provider: str) -> str:
    return provider if provider in settings.CLOUD_PROVIDERS else "other"


def _kv_increment(kv: Any, key: str, amount: int) -> None:
    # Atomic on Redis (INCRBY); the embedded file cache reads and writes, which only a sweep
    # overlapping another could race.
    kv.add(key, 0, timeout=None)
    try:
        kv.incr(key, amount)
    except ValueError:  # cleared between add and incr
        kv.set(key, amount, timeout=None)


# --- interruptions and health verdicts --------------------------------------------------


def _reclaim_time(*, signal: str, detail: dict[str, Any], now: datetime) -> datetime | None:
    """When the cloud takes the instance back, as far as the signal tells: the warning's deadline, or now for
    a cloud that already reports it gone; None when only the agent spoke (it runs until it is stopped)."""
    if signal != "cloud":
        return None
    deadline = parse_datetime(detail["deadline"]) if isinstance(detail.get("deadline"), str) else None
    return deadline if deadline is not None and deadline.tzinfo is not None else now


def workload_interrupt(*, workload_id: UUID | str, signal: str, detail: dict[str, Any] | None = None) -> bool:
    """RUNNING → INTERRUPTED on the first interruption signal (``agent`` or ``cloud``); later ones are no-ops.

    Blocks the instance's pool for the cool-down, tells the customer, and starts
    the recovery: migration, or termination when its recovery policy says so.
    Preemptions come in waves, so every other workload running on spot in the
    same pool is warned: its agent is asked for a checkpoint now. Returns whether
    this signal was the first.
    """

    with transaction.atomic():
        workload = Workload.objects.select_for_update().get(id=workload_id)
        if workload.status != WorkloadStatus.RUNNING:
            WorkloadEvent.objects.create(
                workload=workload,
                kind=WorkloadEvent.Kind.INFO,
                name="interruption-signal",
                message=f"Interruption signal from the {signal} side (already {workload.status}).",
                detail={"signal": signal, **(detail or {})},
            )
            return False
        instance = workload_current_instance(workload_id=workload.id)
        workload_transition_locked(
            workload,
            "spot_interrupt",
            message=f"Spot interruption: the {signal} signal came first.",
            detail={"signal": signal, **(detail or {})},
        )
        if instance is not None:
            pool_block(
                provider=instance.provider,
                region=instance.region,
                availability_zone=instance.availability_zone,
                instance_type=instance.instance_type,
                reason=f"spot interruption of {instance.instance_id}",
            )
            now = timezone.now()
            WorkloadInstance.objects.filter(pk=instance.pk, preempted_at__isnull=True).update(
                preempted_at=now, reclaimed_at=_reclaim_time(signal=signal, detail=detail or {}, now=now)
            )
            transaction.on_commit(lambda: pool_wave_warn(instance_id=instance.pk))
        notification_create(
            workload=workload,
            type=NotificationType.WORKLOAD_INTERRUPTED,
            payload=workload_interrupted_payload(workload=workload, signal=signal, instance=instance),
            dedupe_key=str(instance.id) if instance else "",
        )
        _recovery_start(workload, instance=instance, reason=f"spot interruption ({signal})")
    return True


def pool_wave_warn(*, instance_id: Any) -> list[str]:
    """A preemption in a pool warns every other workload running on spot there (most co-interruptions of
    one type in one zone come within minutes): each gets a timeline event and its agent is asked to
    checkpoint now (a task per workload, so a slow agent holds up nobody). The workloads warned."""
    reclaimed = WorkloadInstance.objects.filter(pk=instance_id).first()
    if reclaimed is None:
        return []
    neighbours = WorkloadInstance.objects.filter(
        provider=reclaimed.provider,
        region=reclaimed.region,
        availability_zone=reclaimed.availability_zone,
        instance_type=reclaimed.instance_type,
        market=Market.SPOT,
        terminated_at__isnull=True,
        workload__status=WorkloadStatus.RUNNING,
    ).exclude(workload_id=reclaimed.workload_id)
    warned = []
    for neighbour in neighbours:
        WorkloadEvent.objects.create(
            workload_id=neighbour.workload_id,
            kind=WorkloadEvent.Kind.INFO,
            name="pool-preemption-warning",
            message=f"A spot instance in this pool ({reclaimed.provider}/{reclaimed.region}/"
            f"{reclaimed.availability_zone}/{reclaimed.instance_type}) was just reclaimed: checkpointing now.",
            detail={"reclaimed_instance": reclaimed.instance_id},
        )
        current_app.send_task(CHECKPOINT_TASK, args=(str(neighbour.workload_id),))
        warned.append(str(neighbour.workload_id))
    return warned


def checkpoint_request(*, workload_id: UUID | str) -> bool:
    """Ask the workload's agent for a checkpoint now (``POST /_agent/checkpoint`` at its address)."""
    routing = WorkloadRouting.objects.filter(workload_id=workload_id).first()
    if routing is None:
        return False
    request = urllib.request.Request(f"http://{routing.endpoint}/_agent/checkpoint", data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=settings.HEALTH_CHECK_TIMEOUT_SECONDS * 5) as answer:
            return 200 <= answer.status < 300
    except (urllib.error.URLError, OSError) as error:
        logger.info("checkpoint request to %s failed: %s", routing.endpoint, error)
        return False


def workload_mark_unhealthy(*, workload_id: UUID | str, reason: str) -> bool:
    """RUNNING → UNHEALTHY after failed health checks, then the recovery; False if it was not RUNNING."""
    with transaction.atomic():
        workload = Workload.objects.select_for_update().get(id=workload_id)
        if workload.status != WorkloadStatus.RUNNING:
            return False
        instance = workload_current_instance(workload_id=workload.id)
        workload_transition_locked(workload, "health_check_fail", message=reason)
        _recovery_start(workload, instance=instance, reason=reason)
    return True


def _recovery_start(workload: Workload, *, instance: WorkloadInstance | None, reason: str) -> None:
    """Migrate (policy ``migrate``) or terminate; inside the caller's transaction.

    There is no limit on migrations: a workload preempted again and again keeps its work, and
    where it runs next (or whether it waits, or runs on demand) is the arbitrage policy's call.
    """
    if workload.recovery_policy == RecoveryPolicy.MIGRATE:
        pools = []
        if instance is not None:
            pools.append([instance.provider, instance.region, instance.availability_zone, instance.instance_type])
        payload = {"reason": reason, "exclude_pools": pools, "from_instance": str(instance.id) if instance else None}
        workflow_run_create(kind=WorkflowKind.MIGRATE, workload=workload, payload=payload)
        return
    workflow_run_create(kind=WorkflowKind.TERMINATE, workload=workload, payload={"reason": reason})


def agent_interruption_report(*, workload_id: UUID | str, checkpoint: str | None, reason: str = "") -> Workload:
    """The workload's agent saw the interruption notice (and saved its final checkpoint, if named)."""
    if checkpoint:
        WorkloadEvent.objects.create(
            workload_id=workload_id,
            kind=WorkloadEvent.Kind.INFO,
            name="final-checkpoint",
            message=f"The agent saved its final checkpoint {checkpoint}.",
            detail={"checkpoint": checkpoint},
        )
    workload_interrupt(workload_id=workload_id, signal="agent", detail={"reason": reason} if reason else None)
    return Workload.objects.get(id=workload_id)


def workload_simulate_interruption(*, workload_id: UUID | str, grace_seconds: float) -> datetime:
    """Give a RUNNING workload's local-cloud instance a spot interruption notice (operators, demos, tests)."""

    workload = Workload.objects.get(id=workload_id)
    instance = workload_current_instance(workload_id=workload_id)
    if workload.status != WorkloadStatus.RUNNING or instance is None:
        raise TransitionRefused(workload_id=workload_id, transition="spot_interrupt", current_state=workload.status)
    if settings.CLOUD_BACKENDS.get(instance.provider) != "local":
        raise DomainError(
            f"Only local-cloud instances can be interrupted on demand; this one runs on {instance.provider}."
        )
    if instance.market == Market.ON_DEMAND:
        raise DomainError("This workload runs on an on-demand instance: the cloud never reclaims those.")
    return local.interruption_notice(instance.instance_id, grace_seconds=grace_seconds)


def workload_rebalance(*, workload_id: UUID | str, min_saving_pct: Decimal) -> dict[str, Any]:
    """Move a RUNNING workload to an offer cheaper by at least ``min_saving_pct`` percent.

    The move is the migration workflow (the workload passes through INTERRUPTED
    with the signal ``rebalance``; its pool is not blocked): the agent is asked
    for a final checkpoint, then the workload is re-placed away from its pool.
    Raises ``NoCheaperOffer`` when nothing is cheaper by that margin.
    """
    with transaction.atomic():
        workload = Workload.objects.select_for_update().get(id=workload_id)
        instance = workload_current_instance(workload_id=workload.id)
        if workload.status != WorkloadStatus.RUNNING or instance is None:
            raise TransitionRefused(workload_id=workload.id, transition="rebalance", current_state=workload.status)
        pool = (instance.provider, instance.region, instance.availability_zone, instance.instance_type)
        try:
            best = placement_candidates(requirements=workload.requirements, limit=1, exclude_pools=[pool])[0]
        except NoPlacement:
            raise NoCheaperOffer("No other offer fits this workload.", current_price=str(instance.spot_price)) from None
        current = Decimal(instance.spot_price)
        saving_pct = ((current - best.spot_price) / current * 100).quantize(Decimal("0.01"))
        offer = {"provider": best.provider, "region": best.region, "availability_zone": best.availability_zone,
                 "instance_type": best.instance_type, "spot_price": str(best.spot_price)}  # fmt: skip
        if saving_pct < min_saving_pct:
            raise NoCheaperOffer(
                f"The best other offer saves {saving_pct}%, less than the {min_saving_pct}% asked for.",
                current_price=str(current),
                best_offer=offer,
            )
        workload_transition_locked(
            workload,
            "spot_interrupt",
            message=f"Rebalance to {best.provider}/{best.region}/{best.instance_type}: {saving_pct}% cheaper.",
            detail={"signal": "rebalance", "offer": offer, "saving_pct": str(saving_pct)},
        )
        workflow_run_create(
            kind=WorkflowKind.MIGRATE,
            workload=workload,
            payload={
                "reason": "rebalance to a cheaper offer",
                "signal": "rebalance",
                "exclude_pools": [list(pool)],
                "from_instance": str(instance.id),
            },
        )
    return {"status": workload.status, "saving_pct": str(saving_pct), "offer": offer}
