"""The health sweep: every monitored RUNNING workload checked at once, verdicts applied."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from arbitrage.logs import log_context
from arbitrage.metrics import health_checks_record
from placement.clouds.base import CloudError, InstanceNotFound, InstanceState, get_cloud
from workloads.health import check_many
from workloads.models import HealthMonitor, WorkloadStatus
from workloads.services import workload_interrupt, workload_mark_unhealthy

logger = logging.getLogger(__name__)

GONE = (InstanceState.PREEMPTED, InstanceState.TERMINATED, InstanceState.FAILED)


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
