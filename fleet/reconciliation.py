"""Reconciliation: what the clouds run against what the database says runs.

For each configured provider and region, list the instances tagged
``managed-by`` and compare:

* an instance no workload owns (a create whose run died before recording it,
  a terminate that never reached the cloud) is a **leak**: once it is older
  than ``RECONCILE_GRACE_SECONDS`` it is terminated, so it stops costing money;
  younger ones may be a create in flight and are left alone;
* a RUNNING workload whose instance the cloud no longer has (or reports
  preempted/terminated) is **lost**: it goes to the interruption handling,
  which migrates it or ends it by its recovery policy.

Every finding is kept in ``placement.ReconcileFinding``. ``dry_run`` reports the
same decisions and changes nothing, in the clouds or in the database.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from arbitrage.logs import log_context
from placement.clouds.base import CloudError, InstanceInfo, InstanceNotFound, InstanceState, get_cloud
from placement.models import ReconcileFinding
from placement.services import catalog_regions
from workloads.models import InstanceStatus, Workload, WorkloadInstance, WorkloadStatus
from workloads.recovery import workload_interrupt

logger = logging.getLogger(__name__)

GONE_STATES = (InstanceState.TERMINATED, InstanceState.PREEMPTED, InstanceState.FAILED)


@dataclass(frozen=True)
class ReconcileAction:
    """One decision: ``action`` is terminate, wait, interrupt or error."""

    action: str
    provider: str
    region: str
    instance_id: str = ""
    workload_id: str = ""
    reason: str = ""

    def describe(self) -> str:
        subject = f"{self.provider}/{self.region}"
        if self.instance_id:
            subject += f" {self.instance_id}"
        if self.workload_id:
            subject += f" (workload {self.workload_id})"
        return f"{self.action} {subject}: {self.reason}"


@dataclass
class ReconcileReport:
    dry_run: bool
    regions_checked: list[str] = field(default_factory=list)
    actions: list[ReconcileAction] = field(default_factory=list)

    def count(self, action: str) -> int:
        return sum(1 for item in self.actions if item.action == action)


def reconcile_regions(*, provider: str) -> list[str]:
    """``CLOUD_REGIONS`` for the provider, else its catalog regions, plus any region it has live instances in."""
    configured = settings.CLOUD_REGIONS.get(provider) or catalog_regions(provider=provider)
    live = WorkloadInstance.objects.filter(provider=provider, terminated_at__isnull=True).values_list(
        "region", flat=True
    )
    return sorted(set(configured) | set(live))


def cloud_reconcile(*, dry_run: bool = False, now: datetime | None = None) -> ReconcileReport:
    now = now or timezone.now()
    report = ReconcileReport(dry_run=dry_run)
    for provider in settings.CLOUD_BACKENDS:
        cloud = get_cloud(provider)
        for region in reconcile_regions(provider=provider):
            try:
                listed = cloud.list_managed_instances(region)
            except CloudError as error:
                report.actions.append(
                    ReconcileAction("error", provider, region, reason=f"listing failed: {error.message}")
                )
                continue
            report.regions_checked.append(f"{provider}/{region}")
            _reconcile_leaks(report, provider=provider, region=region, listed=listed, now=now)
            _reconcile_lost(report, provider=provider, region=region, listed=listed, now=now)
    if report.actions:
        logger.info(
            "reconciliation%s: %s",
            " (dry run)" if dry_run else "",
            "; ".join(item.describe() for item in report.actions),
        )
    return report


def _reconcile_leaks(
    report: ReconcileReport, *, provider: str, region: str, listed: list[InstanceInfo], now: datetime
) -> None:
    owned = set(
        WorkloadInstance.objects.filter(provider=provider, region=region, terminated_at__isnull=True).values_list(
            "instance_id", flat=True
        )
    )
    grace = timedelta(seconds=settings.RECONCILE_GRACE_SECONDS)
    leaked_ids = set()
    for info in listed:
        if info.instance_id in owned or info.state in GONE_STATES:
            continue
        leaked_ids.add(info.instance_id)
        finding = ReconcileFinding.objects.filter(
            provider=provider, instance_id=info.instance_id, kind=ReconcileFinding.Kind.LEAK
        ).first()
        first_seen = finding.first_seen_at if finding else now
        born = min(info.launched_at, first_seen) if info.launched_at else first_seen
        age = now - born
        seconds_old, grace_seconds = int(age.total_seconds()), int(grace.total_seconds())
        tags = {key: info.tags[key] for key in ("workload-id", "customer-id") if key in info.tags}
        if age < grace:
            reason = f"no workload owns it; {seconds_old}s old, inside the {grace_seconds}s grace"
            report.actions.append(ReconcileAction("wait", provider, region, info.instance_id, reason=reason))
            outcome = ReconcileFinding.Outcome.WAITING
        else:
            reason = f"no workload owns it; {seconds_old}s old"
            report.actions.append(ReconcileAction("terminate", provider, region, info.instance_id, reason=reason))
            outcome = ReconcileFinding.Outcome.TERMINATED
            if not report.dry_run:
                try:
                    get_cloud(provider).terminate_instance(info.instance_id, region)
                except CloudError as error:
                    report.actions.append(
                        ReconcileAction("error", provider, region, info.instance_id, reason=error.message)
                    )
                    outcome = ReconcileFinding.Outcome.WAITING
        if not report.dry_run:
            ReconcileFinding.objects.update_or_create(
                provider=provider,
                instance_id=info.instance_id,
                kind=ReconcileFinding.Kind.LEAK,
                defaults={
                    "region": region,
                    "outcome": outcome,
                    "launched_at": info.launched_at,
                    "last_seen_at": now,
                    "acted_at": now if outcome == ReconcileFinding.Outcome.TERMINATED else None,
                    "detail": {"tags": tags, "state": str(info.state), "reason": reason},
                },
                create_defaults={
                    "region": region,
                    "outcome": outcome,
                    "launched_at": info.launched_at,
                    "first_seen_at": now,
                    "last_seen_at": now,
                    "acted_at": now if outcome == ReconcileFinding.Outcome.TERMINATED else None,
                    "detail": {"tags": tags, "state": str(info.state), "reason": reason},
                },
            )
    if not report.dry_run:
        # Leaks that went away on their own (or became owned) before their grace ran out.
        ReconcileFinding.objects.filter(
            provider=provider, region=region, kind=ReconcileFinding.Kind.LEAK, outcome=ReconcileFinding.Outcome.WAITING
        ).exclude(instance_id__in=leaked_ids).update(outcome=ReconcileFinding.Outcome.GONE, last_seen_at=now)


def _reconcile_lost(
    report: ReconcileReport, *, provider: str, region: str, listed: list[InstanceInfo], now: datetime
) -> None:
    alive = {info.instance_id for info in listed if info.state not in GONE_STATES}
    candidates = WorkloadInstance.objects.filter(
        provider=provider,
        region=region,
        terminated_at__isnull=True,
        status=InstanceStatus.RUNNING,
        workload__status=WorkloadStatus.RUNNING,
    ).exclude(instance_id__in=alive)
    for instance in candidates:
        # A list can lag behind; ask for this one instance before acting on its absence.
        try:
            info = get_cloud(provider).get_instance_status(instance.instance_id, region)
            if info.state not in GONE_STATES:
                continue
            reason = f"the cloud reports it {info.state}" + (f" ({info.state_reason})" if info.state_reason else "")
        except InstanceNotFound:
            reason = "the cloud no longer has it"
        except CloudError as error:
            error_action = ReconcileAction("error", provider, region, instance.instance_id, reason=error.message)
            report.actions.append(error_action)
            continue
        workload_id = str(instance.workload_id)
        report.actions.append(
            ReconcileAction("interrupt", provider, region, instance.instance_id, workload_id=workload_id, reason=reason)
        )
        if report.dry_run:
            continue
        with transaction.atomic():
            ReconcileFinding.objects.update_or_create(
                provider=provider,
                instance_id=instance.instance_id,
                kind=ReconcileFinding.Kind.LOST,
                defaults={"region": region, "outcome": ReconcileFinding.Outcome.INTERRUPTED, "last_seen_at": now},
                create_defaults={
                    "region": region,
                    "outcome": ReconcileFinding.Outcome.INTERRUPTED,
                    "workload_id": instance.workload_id,
                    "first_seen_at": now,
                    "last_seen_at": now,
                    "acted_at": now,
                    "detail": {"reason": reason},
                },
            )
            with log_context(workload_id=workload_id):
                logger.warning("reconciliation: instance %s is gone (%s); interrupting", instance.instance_id, reason)
                workload_interrupt(
                    workload_id=workload_id, signal="cloud", detail={"source": "reconciliation", "reason": reason}
                )


def cloud_interruption_warnings_poll() -> list[str]:
    """Read every cloud's interruption warnings (AWS: the EventBridge queue) and interrupt the workloads named.

    Returns the ids of the workloads interrupted by this poll.
    """
    interrupted = []
    for provider in settings.CLOUD_BACKENDS:
        cloud = get_cloud(provider)
        for region in reconcile_regions(provider=provider):
            try:
                warnings = cloud.interruption_warnings(region)
            except CloudError as error:
                logger.warning("interruption warnings of %s/%s unavailable: %s", provider, region, error.message)
                continue
            for warning in warnings:
                workload_id = (
                    Workload.objects.filter(
                        status=WorkloadStatus.RUNNING,
                        instances__provider=provider,
                        instances__instance_id=warning.instance_id,
                        instances__terminated_at__isnull=True,
                    )
                    .values_list("id", flat=True)
                    .first()
                )
                if workload_id is None:
                    continue
                detail = {"source": "interruption-warning", **warning.detail}
                if warning.deadline:
                    detail["deadline"] = warning.deadline.isoformat()
                if workload_interrupt(workload_id=workload_id, signal="cloud", detail=detail):
                    interrupted.append(str(workload_id))
    return interrupted
