"""Reads for workloads, customers and keys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.db.models import Prefetch, Q, QuerySet
from django.utils import timezone

from accounts import tokens
from accounts.models import Customer
from storage.selectors import storage_config_get
from workloads.models import (
    WorkflowRun,
    WorkflowStep,
    Workload,
    WorkloadEvent,
    WorkloadInstance,
    WorkloadLogLine,
    WorkloadStatus,
)


def workload_list(*, customer: Customer, status: str | None = None) -> QuerySet[Workload]:
    workloads = Workload.objects.filter(customer=customer)
    if status:
        workloads = workloads.filter(status=status)
    return workloads.order_by("-created_at", "id")


def workload_get(*, customer: Customer, workload_id: UUID | str) -> Workload | None:
    """The customer's workload with its instances and timeline, or None (also for another customer's)."""
    return (
        Workload.objects.filter(customer=customer, id=workload_id)
        .prefetch_related(
            Prefetch("instances", queryset=WorkloadInstance.objects.order_by("created_at")),
            Prefetch("events", queryset=WorkloadEvent.objects.order_by("created_at", "id")),
        )
        .select_related("routing")
        .first()
    )


def workload_owned(*, customer: Customer, workload_id: UUID | str) -> Workload | None:
    """The customer's workload alone (none of its relations), or None (also for another customer's)."""
    return Workload.objects.filter(customer=customer, id=workload_id).first()


def workload_by_idempotency_key(*, customer: Customer, idempotency_key: str) -> Workload | None:
    return Workload.objects.filter(customer=customer, idempotency_key=idempotency_key).first()


def workflow_runs(*, workload: Workload):
    return (
        WorkflowRun.objects.filter(workload=workload)
        .prefetch_related(Prefetch("steps", queryset=WorkflowStep.objects.order_by("position")))
        .order_by("created_at")
    )


# --- progress and the deadline -------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """How far a workload has got and whether it will make its deadline on the present plan."""

    progress_seconds: float
    remaining_seconds: float | None  # None without an expected duration
    on_track: bool | None  # None without a deadline, or once it has ended
    market: str | None  # of the instance it runs or starts on; None without one


def workload_current_instance_of(workload: Workload) -> WorkloadInstance | None:
    """Its newest instance that has not ended (uses prefetched instances when there are)."""
    live = [instance for instance in workload.instances.all() if instance.terminated_at is None]
    return max(live, key=lambda instance: instance.created_at) if live else None


def workload_progress(*, workload: Workload, now: datetime | None = None) -> Progress:
    """Progress: what the workload reported, or else the run time credited so far plus the time since
    its current instance became healthy. On track: the remaining work (plus one launch when nothing
    runs) fits before the deadline."""
    now = now or timezone.now()
    instance = workload_current_instance_of(workload)
    progress = workload.progress_seconds
    running = workload.status == WorkloadStatus.RUNNING and instance is not None and instance.healthy_at is not None
    if running and not workload.progress_reported:
        since = max(instance.healthy_at, workload.progress_updated_at or instance.healthy_at)
        progress += max((now - since).total_seconds(), 0.0)
    duration = workload.expected_duration_seconds
    remaining = None if duration is None else max(duration - progress, 0.0)
    on_track = None
    if workload.deadline is not None and remaining is not None and workload.status not in ENDED:
        launch = 0 if running else settings.LAUNCH_OVERHEAD_SECONDS
        on_track = remaining + launch <= (workload.deadline - now).total_seconds()
    return Progress(
        progress_seconds=round(progress, 3),
        remaining_seconds=None if remaining is None else round(remaining, 3),
        on_track=on_track,
        market=instance.market if instance is not None else None,
    )


ENDED = (WorkloadStatus.TERMINATED, WorkloadStatus.FAILED, WorkloadStatus.STOPPING)


def agent_token_standing_get(workload_id: UUID) -> tokens.AgentTokenStanding:
    """What the workload's agent token may do now (registered with accounts in ``WorkloadsConfig.ready``).

    Everything while the workload is not terminated; once it is, only reading until
    its storage retention ends (the end of termination + the storage's retention
    days, when its objects expire), then nothing. A terminated workload without
    storage has nothing to read: its token is dead at once, as is that of a
    workload that does not exist.
    """
    row = Workload.objects.filter(id=workload_id).values("status", "terminated_at", "updated_at").first()
    if row is None:
        return tokens.AgentTokenStanding(tokens.DEAD)
    if row["status"] != WorkloadStatus.TERMINATED:
        return tokens.AgentTokenStanding(tokens.ACTIVE)
    config = storage_config_get(workload_id=workload_id)
    if config is None:
        return tokens.AgentTokenStanding(tokens.DEAD)
    ended_at = config.read_only_since or row["terminated_at"] or row["updated_at"]
    retention_ends_at = ended_at + timedelta(days=config.retention_days)
    if timezone.now() >= retention_ends_at:
        return tokens.AgentTokenStanding(tokens.DEAD)
    return tokens.AgentTokenStanding(tokens.READ_ONLY, read_only_until=retention_ends_at)


# --- the workload's log --------------------------------------------------------------------------

#: Where a workload's log ends: no instance runs again and none will write more.
LOG_ENDED = (WorkloadStatus.TERMINATED, WorkloadStatus.FAILED)


@dataclass(frozen=True)
class LogPage:
    """Lines after a position, and what a reader does next."""

    lines: list[WorkloadLogLine]
    next_after: int  # the position to ask after next time
    more: bool  # more lines are stored after next_after now
    ended: bool  # nothing will ever come after next_after
    status: str  # the workload's state when the page was read


def instances_output_pending() -> QuerySet[WorkloadInstance]:
    """Instances whose output may hold lines not stored yet: not collected, or not to the end of it."""
    return (
        WorkloadInstance.objects.exclude(instance_id="")
        .filter(Q(log_cursor__isnull=True) | Q(log_cursor__finished_at__isnull=True))
        .order_by("created_at")
    )


def workload_log_page(*, workload_id: UUID | str, after: int, limit: int) -> LogPage:
    """The workload's log lines with a position above ``after``, at most ``limit``, in order.

    ``ended`` once the workload is TERMINATED or FAILED, each of its instances' output has
    been collected to the end, and this page holds the last line. Whether it has ended is
    read before the lines, so no line stored meanwhile is missed by a reader that stops.
    """
    status = Workload.objects.filter(id=workload_id).values_list("status", flat=True).first() or ""
    finished = status in LOG_ENDED and not instances_output_pending().filter(workload_id=workload_id).exists()
    rows = list(
        WorkloadLogLine.objects.filter(workload_id=workload_id, position__gt=after).order_by("position")[: limit + 1]
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return LogPage(
        lines=rows,
        next_after=rows[-1].position if rows else after,
        more=more,
        ended=finished and not more,
        status=status,
    )


def workload_log_tail(*, workload_id: UUID | str, count: int) -> list[WorkloadLogLine]:
    """The workload's newest ``count`` log lines, oldest first."""
    newest = WorkloadLogLine.objects.filter(workload_id=workload_id).order_by("-position")[:count]
    return list(reversed(newest))
