"""Reads for the operator console: the admin dashboard and a workload's page (docs/architecture.md §13)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, F, Prefetch, Q
from django.utils import timezone

from billing.money import CURRENCY, ZERO, saving_percent, seconds_between, segment_price
from billing.selectors import DaySpend, daily_spend, month_start, monthly_provider_totals
from placement.clouds.base import Market
from placement.models import PoolBlock
from storage.selectors import checkpoint_list, storage_summary_get
from workloads.models import (
    Notification,
    RunStatus,
    StepStatus,
    WorkflowKind,
    WorkflowRun,
    WorkflowStep,
    Workload,
    WorkloadInstance,
    WorkloadStatus,
)
from workloads.selectors import workflow_runs

RECENT_FAILURES = 10


@dataclass(frozen=True)
class StateCount:
    status: str
    count: int


@dataclass(frozen=True)
class MonthSpend:
    """Every customer's spend this month, summed from ``billing.selectors.monthly_provider_totals``."""

    label: str
    customers: int
    instance_hours: Decimal
    spend: Decimal
    spot_spend: Decimal
    on_demand_spend: Decimal  # the deadlines' on-demand fallback; spot + on demand = spend
    on_demand_equivalent: Decimal
    saving: Decimal
    saving_percent: Decimal | None
    currency: str
    month: date  # its first day


@dataclass(frozen=True)
class DayChart:
    """This month's spend per UTC day (every day begun so far), for the dashboard's chart."""

    month: date  # the first day
    days: tuple[DaySpend, ...]


@dataclass(frozen=True)
class ConsoleDashboard:
    states: tuple[StateCount, ...]
    total: int
    month: MonthSpend
    daily: DayChart
    interrupted: list[Workload]
    migrations: list[WorkflowRun]
    failures: list[WorkflowRun]
    blocked_pools: list[Any]


@dataclass(frozen=True)
class StepRow:
    step: WorkflowStep
    seconds: float | None  # None until it started; up to now while it runs


@dataclass(frozen=True)
class RunTimeline:
    run: WorkflowRun
    steps: tuple[StepRow, ...]
    seconds: float


@dataclass(frozen=True)
class Segment:
    """One instance segment and what it cost; a running one accrues by the second up to now."""

    instance: WorkloadInstance
    seconds: Decimal
    cost: Decimal
    running: bool
    market: str  # "spot" or "on_demand": how it was bought (as its bill says, once billed)

    @property
    def on_demand(self) -> bool:
        return self.market == Market.ON_DEMAND


@dataclass(frozen=True)
class WorkloadConsole:
    runs: tuple[RunTimeline, ...]
    segments: tuple[Segment, ...]
    total_cost: Decimal
    notifications: list[Notification]
    storage: dict[str, Any] | None
    checkpoints: list[Any]


def console_state_counts() -> tuple[StateCount, ...]:
    """How many workloads are in each state, every state listed (zeros too), in the machine's order."""
    counts = dict(Workload.objects.order_by().values_list("status").annotate(count=Count("id")))
    return tuple(StateCount(status=status, count=counts.get(status, 0)) for status in WorkloadStatus.values)


def console_month_spend(*, now: datetime | None = None) -> MonthSpend:
    """Spend (spot and on demand), on-demand equivalent and saving of every customer this month (UTC).

    Running instances count up to ``now``.
    """
    now = now or timezone.now()
    start = month_start(now.date())
    providers = monthly_provider_totals(month=now.date(), now=now)
    customers = (
        WorkloadInstance.objects.filter(Q(created_at__lt=now) | Q(launched_at__lt=now))
        .filter(Q(terminated_at__isnull=True) | Q(terminated_at__gt=start))
        .order_by()
        .values("workload__customer_id")
        .distinct()
        .count()
    )
    spend = sum((row.spend for row in providers), ZERO)
    on_demand = sum((row.on_demand_equivalent for row in providers), ZERO)
    saving = on_demand - spend
    return MonthSpend(
        label=start.strftime("%B %Y"),
        customers=customers,
        instance_hours=sum((row.instance_hours for row in providers), ZERO),
        spend=spend,
        spot_spend=sum((row.spot_spend for row in providers), ZERO),
        on_demand_spend=sum((row.on_demand_spend for row in providers), ZERO),
        on_demand_equivalent=on_demand,
        saving=saving,
        saving_percent=saving_percent(spend=spend, on_demand=on_demand),
        currency=CURRENCY,
        month=start.date(),
    )


def console_daily_spend(*, now: datetime | None = None) -> DayChart:
    """Every customer's spend this month (UTC) day by day, from ``billing.selectors.daily_spend``."""
    now = now or timezone.now()
    month = month_start(now.date()).date()
    return DayChart(month=month, days=daily_spend(month=month, now=now))


def console_interrupted_workloads() -> list[Workload]:
    return list(
        Workload.objects.filter(status=WorkloadStatus.INTERRUPTED).select_related("customer").order_by("updated_at")
    )


def console_running_migrations() -> list[WorkflowRun]:
    """Migration runs in progress, each with ``current_step`` (its first unfinished step) set."""
    runs = list(
        WorkflowRun.objects.filter(kind=WorkflowKind.MIGRATE, status=RunStatus.RUNNING)
        .select_related("workload__customer")
        .prefetch_related(Prefetch("steps", queryset=WorkflowStep.objects.order_by("position")))
        .order_by("created_at")
    )
    for run in runs:
        run.current_step = next((step for step in run.steps.all() if step.status != StepStatus.SUCCEEDED), None)
    return runs


def console_recent_failures(*, limit: int = RECENT_FAILURES) -> list[WorkflowRun]:
    return list(
        WorkflowRun.objects.filter(status=RunStatus.FAILED)
        .select_related("workload__customer")
        .order_by(F("finished_at").desc(nulls_last=True), "-created_at")[:limit]
    )


def console_blocked_pools(*, now: datetime | None = None) -> list[Any]:
    return list(PoolBlock.objects.filter(until__gt=now or timezone.now()).order_by("until"))


def console_dashboard(*, now: datetime | None = None) -> ConsoleDashboard:
    """Everything the operator console's dashboard shows."""
    now = now or timezone.now()
    states = console_state_counts()
    return ConsoleDashboard(
        states=states,
        total=sum(state.count for state in states),
        month=console_month_spend(now=now),
        daily=console_daily_spend(now=now),
        interrupted=console_interrupted_workloads(),
        migrations=console_running_migrations(),
        failures=console_recent_failures(),
        blocked_pools=console_blocked_pools(now=now),
    )


def _span_seconds(start: datetime | None, end: datetime | None, now: datetime) -> float | None:
    if start is None:
        return None
    return max((end or now) - start, timedelta(0)).total_seconds()


def segment_cost(*, instance: WorkloadInstance, now: datetime) -> Segment:
    """The segment's cost: its usage record once billed, else priced by billing's rule (to now while it runs)."""
    record = getattr(instance, "usage_record", None)
    seconds = seconds_between((instance.billed_until or now) - instance.billed_from)
    if record is not None:
        cost, market = record.total_cost, record.market
    else:
        on_demand = None if instance.on_demand_price is None else Decimal(instance.on_demand_price)
        cost = segment_price(seconds=seconds, spot_price=Decimal(instance.spot_price), on_demand_price=on_demand).cost
        market = instance.market
    return Segment(
        instance=instance, seconds=seconds, cost=cost, running=instance.terminated_at is None, market=str(market)
    )


def workload_console(*, workload: Workload, now: datetime | None = None) -> WorkloadConsole:
    """A workload's page in the console: run timelines, priced segments, notifications, storage."""
    now = now or timezone.now()
    runs = tuple(
        RunTimeline(
            run=run,
            steps=tuple(
                StepRow(step=step, seconds=_span_seconds(step.started_at, step.finished_at, now))
                for step in run.steps.all()
            ),
            seconds=_span_seconds(run.created_at, run.finished_at, now) or 0.0,
        )
        for run in workflow_runs(workload=workload)
    )
    instances = WorkloadInstance.objects.filter(workload=workload).select_related("usage_record").order_by("created_at")
    segments = tuple(segment_cost(instance=instance, now=now) for instance in instances)
    return WorkloadConsole(
        runs=runs,
        segments=segments,
        total_cost=sum((segment.cost for segment in segments), ZERO),
        notifications=list(Notification.objects.filter(workload=workload).order_by("-created_at")[:50]),
        storage=storage_summary_get(workload_id=workload.id),
        checkpoints=list(checkpoint_list(workload_id=workload.id)[:10]),
    )
