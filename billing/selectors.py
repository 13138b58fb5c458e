"""Billing reads: a customer's month, the month day by day, and a workload's cost so far (docs/architecture.md §11).

Every instance segment counts for the seconds it overlaps the period asked about:

* a finished segment is priced from its usage record (the spot price it was bought
  at); one that ended but whose record is still being written (it is made just
  after the termination commits) is priced from the instance itself, with the same
  formula, so figures never dip in between;
* a running segment (``terminated_at`` null) accrues by the second up to ``now``.

A segment spanning a month boundary (or, day by day, midnight UTC) is split by
its seconds in each period. Each part is priced by ``billing.money.segment_price``,
the rule usage records are written with, and totals are sums of those parts.
Bills wholly inside a period are summed by the database in one aggregate.

Spend is split by market: what ran on spot, and what ran on demand (a deadline's
fallback, bought and billed at the on-demand price). ``spot_spend +
on_demand_spend == spend`` always; the on-demand equivalent (and so the saving)
still compares every hour with buying it all on demand.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from uuid import UUID

from django.db.models import F, Q, Sum
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from accounts.models import Customer
from billing.models import UsageRecord
from billing.money import CURRENCY, MONEY, ZERO, saving_percent, seconds_between, segment_price
from placement.clouds.base import Market
from workloads.models import WorkloadInstance


@dataclass(frozen=True)
class ProviderSummary:
    """One cloud's figures in a month.

    ``spend`` splits into ``spot_spend`` and ``on_demand_spend``; given neither
    (as a row written out by hand may be), it is all spot, and given one, the
    other is the rest of ``spend``.
    """

    provider: str
    instance_hours: Decimal
    spend: Decimal
    on_demand_equivalent: Decimal
    saving: Decimal
    spot_spend: Decimal | None = None
    on_demand_spend: Decimal | None = None

    def __post_init__(self) -> None:
        spot, on_demand = self.spot_spend, self.on_demand_spend
        if spot is None:
            on_demand = ZERO if on_demand is None else on_demand
            spot = self.spend - on_demand
        elif on_demand is None:
            on_demand = self.spend - spot
        if spot + on_demand != self.spend:
            raise ValueError(f"spot {spot} + on demand {on_demand} is not the spend {self.spend}")
        object.__setattr__(self, "spot_spend", spot)
        object.__setattr__(self, "on_demand_spend", on_demand)


@dataclass(frozen=True)
class MonthlySummary:
    customer_id: UUID
    month: date  # the first day of the month
    start: datetime  # inclusive, UTC
    end: datetime  # exclusive, UTC
    instance_hours: Decimal
    spend: Decimal
    spot_spend: Decimal  # what ran on spot capacity
    on_demand_spend: Decimal  # what ran on on-demand capacity (a deadline's fallback); spot + on demand = spend
    on_demand_equivalent: Decimal
    saving: Decimal
    saving_percent: Decimal | None  # None when nothing ran (no on-demand equivalent to compare with)
    budget: Decimal | None
    budget_remaining: Decimal | None  # budget - spend, never below zero; None without a budget
    providers: tuple[ProviderSummary, ...]
    currency: str = CURRENCY

    @property
    def label(self) -> str:
        """The month as ``YYYY-MM``."""
        return self.month.strftime("%Y-%m")

    @property
    def budget_reached(self) -> bool:
        return self.budget is not None and self.spend >= self.budget


@dataclass(frozen=True)
class DaySpend:
    """One UTC day of a month: what ran, by market, and the same hours all on demand."""

    day: date
    instance_hours: Decimal
    spot_spend: Decimal
    on_demand_spend: Decimal
    on_demand_equivalent: Decimal

    @property
    def spend(self) -> Decimal:
        return self.spot_spend + self.on_demand_spend

    @property
    def saving(self) -> Decimal:
        return self.on_demand_equivalent - self.spend


@dataclass(frozen=True)
class SegmentCost:
    provider: str
    region: str
    instance_type: str
    market: str  # "spot" or "on_demand"
    started_at: datetime
    ended_at: datetime | None  # None while it runs
    hours: Decimal
    cost: Decimal
    on_demand_cost: Decimal
    spot_price_per_hour: Decimal


@dataclass(frozen=True)
class WorkloadCost:
    workload_id: UUID
    spend: Decimal
    on_demand_equivalent: Decimal
    saving: Decimal
    segments: tuple[SegmentCost, ...]
    currency: str = CURRENCY


@dataclass(frozen=True)
class _Segment:
    """One instance segment as billing sees it: its span and the prices it was bought at."""

    provider: str
    region: str
    instance_type: str
    market: str
    started_at: datetime
    ended_at: datetime | None
    spot_price: Decimal  # the price it was bought at (the on-demand price for an on-demand segment)
    on_demand_price: Decimal | None
    record: UsageRecord | None = None  # its bill, once written


MONTH_PATTERN = re.compile(r"([0-9]{4})-([0-9]{2})")
FIRST_YEAR, LAST_YEAR = 2000, 2999


def month_parse(label: str) -> date:
    """``"2026-11"`` → ``date(2026, 11, 1)``; ``ValueError`` with a readable message otherwise."""
    match = MONTH_PATTERN.fullmatch(label.strip())
    year, month = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    if not (FIRST_YEAR <= year <= LAST_YEAR and 1 <= month <= 12):
        raise ValueError(f"A month as YYYY-MM, such as 2026-11, from {FIRST_YEAR}-01 to {LAST_YEAR}-12.")
    return date(year, month, 1)


def month_start(month: date) -> datetime:
    return datetime(month.year, month.month, 1, tzinfo=UTC)


def month_end(month: date) -> datetime:
    """The first instant of the next month (exclusive end), UTC."""
    return datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=UTC)


def _segment(instance: WorkloadInstance) -> _Segment:
    record: UsageRecord | None = getattr(instance, "usage_record", None)
    if record is not None:
        return _Segment(
            provider=record.provider,
            region=record.region,
            instance_type=record.instance_type,
            market=record.market,
            started_at=record.started_at,
            ended_at=record.ended_at,
            spot_price=record.spot_price_per_hour,
            on_demand_price=record.on_demand_price_per_hour,
            record=record,
        )
    return _Segment(
        provider=instance.provider,
        region=instance.region,
        instance_type=instance.instance_type,
        market=str(instance.market),
        started_at=instance.billed_from,
        ended_at=instance.billed_until,
        spot_price=Decimal(instance.spot_price),
        on_demand_price=None if instance.on_demand_price is None else Decimal(instance.on_demand_price),
    )


def _or(value: Decimal | None, default: Decimal) -> Decimal:
    return default if value is None else value


def _on_demand(market: str) -> bool:
    """Whether a segment of ``market`` ran on on-demand capacity (anything else counts as spot)."""
    return market == Market.ON_DEMAND


def _priced(segment: _Segment, *, start: datetime | None, end: datetime) -> tuple[Decimal, Decimal, Decimal]:
    """``(hours, cost, on_demand_cost)`` of the part of ``segment`` inside ``[start, end)``.

    ``end`` is the period's end, or ``now`` for a segment that still runs.
    """
    record = segment.record
    if record is not None and (start is None or record.started_at >= start) and record.ended_at <= end:
        # Wholly inside the period: its bill, as written.
        return record.duration_hours, record.total_cost, _or(record.on_demand_cost, record.total_cost)
    stop = min(segment.ended_at, end) if segment.ended_at is not None else end
    begin = max(segment.started_at, start) if start is not None else segment.started_at
    part = segment_price(
        seconds=seconds_between(stop - begin), spot_price=segment.spot_price, on_demand_price=segment.on_demand_price
    )
    return part.hours, part.cost, part.on_demand_cost


@dataclass
class _Totals:
    """Running sums of priced parts: hours, spend by market, and the on-demand equivalent."""

    hours: Decimal = ZERO
    spot_spend: Decimal = ZERO
    on_demand_spend: Decimal = ZERO
    on_demand_equivalent: Decimal = ZERO

    def add(self, *, market: str, hours: Decimal, cost: Decimal, on_demand: Decimal) -> None:
        self.hours += hours
        if _on_demand(market):
            self.on_demand_spend += cost
        else:
            self.spot_spend += cost
        self.on_demand_equivalent += on_demand

    @property
    def spend(self) -> Decimal:
        return self.spot_spend + self.on_demand_spend


def _overlapping(*, start: datetime, until: datetime, customer_id: UUID | str | None):
    """Instance segments that ran at some time in ``[start, until)``, with their usage records, oldest first."""
    instances = (
        WorkloadInstance.objects.filter(Q(created_at__lt=until) | Q(launched_at__lt=until))
        .filter(Q(terminated_at__isnull=True) | Q(terminated_at__gt=start))
        .select_related("usage_record")
        .order_by("created_at", "id")
    )
    if customer_id is not None:
        instances = instances.filter(workload__customer_id=customer_id)
    return instances


def monthly_provider_totals(
    *, month: date, now: datetime | None = None, customer_id: UUID | str | None = None
) -> tuple[ProviderSummary, ...]:
    """Per provider: instance hours, spend (spot and on demand) and on-demand equivalent in ``month`` (UTC).

    Of one customer, or of every customer when ``customer_id`` is None (the
    operator console). Running instances count up to ``now`` (default: the
    current time); a segment crossing the month's edges counts its seconds inside.
    """
    now = now or timezone.now()
    month = month.replace(day=1)
    start, end = month_start(month), month_end(month)
    until = min(end, now)
    per_provider: dict[str, _Totals] = defaultdict(_Totals)
    if until > start:  # a month that has begun
        # Bills wholly inside the period, as written: one aggregate, however many there are.
        records = UsageRecord.objects.filter(started_at__gte=start, ended_at__lte=until)
        if customer_id is not None:
            records = records.filter(customer_id=customer_id)
        for row in (
            records.order_by()
            .values("provider", "market")
            .annotate(
                hours=Sum("duration_hours"),
                spend=Sum("total_cost"),
                on_demand=Sum(Coalesce("on_demand_cost", "total_cost")),
            )
        ):
            per_provider[row["provider"]].add(
                market=row["market"],
                hours=row["hours"] or ZERO,
                cost=row["spend"] or ZERO,
                on_demand=row["on_demand"] or ZERO,
            )
        # Every other segment overlapping it: running, crossing an edge, or ended and not billed yet.
        others = _overlapping(start=start, until=until, customer_id=customer_id).filter(
            Q(usage_record__isnull=True) | Q(usage_record__started_at__lt=start) | Q(usage_record__ended_at__gt=until)
        )
        for instance in others:
            segment = _segment(instance)
            hours, cost, on_demand = _priced(segment, start=start, end=until)
            per_provider[segment.provider].add(market=segment.market, hours=hours, cost=cost, on_demand=on_demand)
    return tuple(
        ProviderSummary(
            provider=provider,
            instance_hours=totals.hours,
            spend=totals.spend,
            on_demand_equivalent=totals.on_demand_equivalent,
            saving=totals.on_demand_equivalent - totals.spend,
            spot_spend=totals.spot_spend,
            on_demand_spend=totals.on_demand_spend,
        )
        for provider, totals in sorted(per_provider.items())
    )


def _day_start(moment: datetime) -> datetime:
    """Midnight UTC at the start of ``moment``'s day."""
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def daily_spend(
    *, month: date, now: datetime | None = None, customer_id: UUID | str | None = None
) -> tuple[DaySpend, ...]:
    """``month`` (UTC) day by day: every day that has begun by ``now``, oldest first, zeros included.

    Of one customer, or of every customer when ``customer_id`` is None (the
    operator console's chart). Each segment's seconds are split by UTC day and
    each part is priced by ``billing.money.segment_price`` (a bill wholly inside
    one day counts as written, summed by the database in one aggregate); a
    running instance counts up to ``now``. A day's figures are the sums of
    those parts, so the days of a month may differ from its monthly total by
    the rounding of each part, at most a millionth of a dollar per part.
    """
    now = now or timezone.now()
    month = month.replace(day=1)
    start, end = month_start(month), month_end(month)
    until = min(end, now)
    per_day: dict[date, _Totals] = {}
    day = start
    while day < until:
        per_day[day.date()] = _Totals()
        day += timedelta(days=1)
    if not per_day:  # a month still to come
        return ()
    # Bills wholly inside one UTC day of the period, as written: one aggregate.
    records = (
        UsageRecord.objects.filter(started_at__gte=start, ended_at__lte=until)
        .annotate(start_day=TruncDate("started_at", tzinfo=UTC), end_day=TruncDate("ended_at", tzinfo=UTC))
        .filter(start_day=F("end_day"))
    )
    if customer_id is not None:
        records = records.filter(customer_id=customer_id)
    for row in (
        records.order_by()
        .values("start_day", "market")
        .annotate(
            hours=Sum("duration_hours"),
            spend=Sum("total_cost"),
            on_demand=Sum(Coalesce("on_demand_cost", "total_cost")),
        )
    ):
        per_day[row["start_day"]].add(
            market=row["market"],
            hours=row["hours"] or ZERO,
            cost=row["spend"] or ZERO,
            on_demand=row["on_demand"] or ZERO,
        )
    # Every other segment overlapping the period: split at each midnight it runs across.
    others = (
        _overlapping(start=start, until=until, customer_id=customer_id)
        .annotate(
            record_start_day=TruncDate("usage_record__started_at", tzinfo=UTC),
            record_end_day=TruncDate("usage_record__ended_at", tzinfo=UTC),
        )
        .filter(
            Q(usage_record__isnull=True)
            | Q(usage_record__started_at__lt=start)
            | Q(usage_record__ended_at__gt=until)
            | ~Q(record_start_day=F("record_end_day"))
        )
    )
    for instance in others:
        segment = _segment(instance)
        stop = until if segment.ended_at is None else min(segment.ended_at, until)
        day = _day_start(max(segment.started_at, start))
        while day < stop:
            next_day = day + timedelta(days=1)
            hours, cost, on_demand = _priced(segment, start=day, end=min(next_day, until))
            per_day[day.date()].add(market=segment.market, hours=hours, cost=cost, on_demand=on_demand)
            day = next_day
    return tuple(
        DaySpend(
            day=day,
            instance_hours=totals.hours,
            spot_spend=totals.spot_spend,
            on_demand_spend=totals.on_demand_spend,
            on_demand_equivalent=totals.on_demand_equivalent,
        )
        for day, totals in per_day.items()
    )


def customer_monthly_summary(*, customer_id: UUID | str, month: date, now: datetime | None = None) -> MonthlySummary:
    """The customer's instance hours, spend (spot and on demand), on-demand equivalent and saving in ``month`` (UTC).

    ``month`` may be any day of the month. Running instances count up to ``now``
    (default: the current time).
    """
    month = month.replace(day=1)
    start, end = month_start(month), month_end(month)
    providers = monthly_provider_totals(month=month, now=now, customer_id=customer_id)
    spot_spend = sum((row.spot_spend for row in providers), ZERO)
    on_demand_spend = sum((row.on_demand_spend for row in providers), ZERO)
    spend = sum((row.spend for row in providers), ZERO)
    on_demand = sum((row.on_demand_equivalent for row in providers), ZERO)
    saving = on_demand - spend
    budget = Customer.objects.filter(id=customer_id).values_list("monthly_budget", flat=True).first()
    return MonthlySummary(
        customer_id=UUID(str(customer_id)),
        month=month,
        start=start,
        end=end,
        instance_hours=sum((row.instance_hours for row in providers), ZERO),
        spend=spend,
        spot_spend=spot_spend,
        on_demand_spend=on_demand_spend,
        on_demand_equivalent=on_demand,
        saving=saving,
        saving_percent=saving_percent(spend=spend, on_demand=on_demand),
        budget=budget,
        budget_remaining=None if budget is None else max(budget - spend, ZERO).quantize(MONEY),
        providers=providers,
    )


def workload_cost_so_far(*, workload_id: UUID | str, now: datetime | None = None) -> WorkloadCost:
    """What the workload has cost over its whole life, segment by segment; a running one up to ``now``."""
    now = now or timezone.now()
    instances = (
        WorkloadInstance.objects.filter(workload_id=workload_id)
        .select_related("usage_record")
        .order_by("created_at", "id")
    )
    segments = []
    for instance in instances:
        segment = _segment(instance)
        hours, cost, on_demand = _priced(segment, start=None, end=now)
        segments.append(
            SegmentCost(
                provider=segment.provider,
                region=segment.region,
                instance_type=segment.instance_type,
                market=segment.market,
                started_at=segment.started_at,
                ended_at=segment.ended_at,
                hours=hours,
                cost=cost,
                on_demand_cost=on_demand,
                spot_price_per_hour=segment.spot_price,
            )
        )
    spend = sum((segment.cost for segment in segments), ZERO)
    on_demand = sum((segment.on_demand_cost for segment in segments), ZERO)
    return WorkloadCost(
        workload_id=UUID(str(workload_id)),
        spend=spend,
        on_demand_equivalent=on_demand,
        saving=on_demand - spend,
        segments=tuple(segments),
    )
