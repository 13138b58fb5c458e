"""Spot and on-demand segments: how each is billed, the month's split by market, and the month day by day."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.models import UsageRecord
from billing.selectors import (
    DaySpend,
    ProviderSummary,
    customer_monthly_summary,
    daily_spend,
    monthly_provider_totals,
    workload_cost_so_far,
)
from tests.factories import CustomerFactory, WorkloadFactory, WorkloadInstanceFactory

pytestmark = pytest.mark.django_db

D = Decimal
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
NOVEMBER = date(2026, 11, 1)


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def on_demand(**fields):
    """An on-demand segment: bought at the on-demand price, which ``spot_price`` then holds."""
    price = fields.pop("price")
    return WorkloadInstanceFactory(market="on_demand", spot_price=price, on_demand_price=price, **fields)


@pytest.fixture
def mixed():
    """A customer whose November ran on spot and, when a deadline needed it, on demand; seen at NOW."""
    customer = CustomerFactory()
    trainer = WorkloadFactory(customer=customer, name="trainer")
    render = WorkloadFactory(customer=customer, name="render")
    # 3 November, aws: 4 h on spot at 0.10 (on demand 0.40), then 2.5 h on demand at 0.40.
    WorkloadInstanceFactory(
        workload=trainer, started_at=at(2026, 11, 3, 8), terminated_at=at(2026, 11, 3, 12),
        spot_price=D("0.100000"), on_demand_price=D("0.400000"),
    )  # fmt: skip
    on_demand(workload=trainer, started_at=at(2026, 11, 3, 12), terminated_at=at(2026, 11, 3, 14, 30), price=D("0.4"))
    # gcp on demand at 0.80 from 22:00 on 5 November to 01:00 on the 6th: 2 h, then 1 h.
    on_demand(
        workload=render, provider="gcp", region="us-central1", instance_type="n2-standard-4",
        started_at=at(2026, 11, 5, 22), terminated_at=at(2026, 11, 6, 1), price=D("0.800000"),
    )  # fmt: skip
    # gcp spot at 0.20 (on demand 0.80), running since 10:00 on the 20th: 2 h up to NOW.
    WorkloadInstanceFactory(
        workload=render, provider="gcp", region="us-central1", instance_type="n2-standard-4",
        started_at=at(2026, 11, 20, 10), spot_price=D("0.200000"), on_demand_price=D("0.800000"),
    )  # fmt: skip
    # Someone else's on-demand hours never show in this customer's figures.
    on_demand(started_at=at(2026, 11, 3, 9), terminated_at=at(2026, 11, 3, 10), price=D("9.000000"))
    return customer


# --- usage records -------------------------------------------------------------------


def test_an_on_demand_segment_is_billed_at_the_on_demand_price_and_recorded_as_on_demand():
    instance = on_demand(started_at=at(2026, 11, 3, 12), terminated_at=at(2026, 11, 3, 14, 30), price=D("0.400000"))

    record = UsageRecord.objects.get(instance=instance)

    assert record.market == "on_demand"
    assert (record.duration_hours, record.spot_price_per_hour, record.on_demand_price_per_hour) == (
        D("2.500000"),
        D("0.400000"),
        D("0.400000"),
    )
    assert (record.total_cost, record.on_demand_cost, record.saving) == (D("1.000000"), D("1.000000"), D(0))


def test_a_spot_segment_is_recorded_as_spot_at_its_spot_price():
    instance = WorkloadInstanceFactory(
        started_at=at(2026, 11, 3, 8), terminated_at=at(2026, 11, 3, 12),
        spot_price=D("0.100000"), on_demand_price=D("0.400000"),
    )  # fmt: skip

    record = UsageRecord.objects.get(instance=instance)

    assert record.market == "spot"
    assert (record.total_cost, record.on_demand_cost) == (D("0.400000"), D("1.600000"))


def test_records_written_before_markets_were_recorded_count_as_spot():
    assert UsageRecord._meta.get_field("market").default == "spot"


# --- the month, split by market -------------------------------------------------


def test_the_summary_splits_spend_into_spot_and_on_demand_and_their_sum_is_the_spend(mixed):
    summary = customer_monthly_summary(customer_id=mixed.id, month=NOVEMBER, now=NOW)

    assert summary.providers == (
        ProviderSummary(
            "aws", D("6.500000"), D("1.400000"), D("2.600000"), D("1.200000"),
            spot_spend=D("0.400000"), on_demand_spend=D("1.000000"),
        ),
        ProviderSummary(
            "gcp", D("5.000000"), D("2.800000"), D("4.000000"), D("1.200000"),
            spot_spend=D("0.400000"), on_demand_spend=D("2.400000"),
        ),
    )  # fmt: skip
    assert (summary.spot_spend, summary.on_demand_spend) == (D("0.800000"), D("3.400000"))
    assert summary.spot_spend + summary.on_demand_spend == summary.spend == D("4.200000")
    for row in summary.providers:
        assert row.spot_spend + row.on_demand_spend == row.spend
    # The saving is still measured against running every hour on demand: on-demand hours save nothing.
    assert (summary.on_demand_equivalent, summary.saving, summary.saving_percent) == (
        D("6.600000"),
        D("2.400000"),
        D("36.36"),
    )


def test_an_on_demand_segment_across_a_month_boundary_counts_as_on_demand_in_both_months():
    customer = CustomerFactory()
    on_demand(
        workload=WorkloadFactory(customer=customer),
        started_at=at(2026, 10, 31, 23), terminated_at=at(2026, 11, 1, 2), price=D("0.600000"),
    )  # fmt: skip

    october, november = (
        customer_monthly_summary(customer_id=customer.id, month=month, now=NOW)
        for month in (date(2026, 10, 1), NOVEMBER)
    )

    assert (october.spot_spend, october.on_demand_spend, october.spend) == (D(0), D("0.600000"), D("0.600000"))
    assert (november.spot_spend, november.on_demand_spend, november.spend) == (D(0), D("1.200000"), D("1.200000"))


def test_a_provider_row_given_no_split_is_all_spot_and_a_split_must_add_up():
    row = ProviderSummary("aws", D("1"), D("0.500000"), D("2.000000"), D("1.500000"))
    assert (row.spot_spend, row.on_demand_spend) == (D("0.500000"), D(0))
    assert ProviderSummary("aws", D("1"), D("0.5"), D("2"), D("1.5"), on_demand_spend=D("0.2")).spot_spend == D("0.3")

    with pytest.raises(ValueError, match="is not the spend"):
        ProviderSummary("aws", D("1"), D("0.5"), D("2"), D("1.5"), spot_spend=D("0.1"), on_demand_spend=D("0.1"))


def test_bills_wholly_inside_the_month_are_summed_in_one_aggregate_by_provider_and_market(
    mixed, django_assert_num_queries
):
    for hour in range(6):
        on_demand(
            workload=WorkloadFactory(customer=mixed),
            started_at=at(2026, 11, 10, hour), terminated_at=at(2026, 11, 10, hour, 30), price=D("0.400000"),
        )  # fmt: skip

    with django_assert_num_queries(2):  # the aggregate, and the segments it cannot cover
        providers = monthly_provider_totals(month=NOVEMBER, now=NOW, customer_id=mixed.id)

    assert [(row.provider, row.spot_spend, row.on_demand_spend) for row in providers] == [
        ("aws", D("0.400000"), D("2.200000")),  # 1.0 + 6 x 0.2
        ("gcp", D("0.400000"), D("2.400000")),
    ]


# --- a workload's cost, segment by segment --------------------------------------------


def test_a_workloads_cost_shows_each_segments_market(mixed):
    trainer = mixed.workloads.get(name="trainer")

    cost = workload_cost_so_far(workload_id=trainer.id, now=NOW)

    assert [(s.market, s.spot_price_per_hour, s.cost, s.on_demand_cost) for s in cost.segments] == [
        ("spot", D("0.100000"), D("0.400000"), D("1.600000")),
        ("on_demand", D("0.400000"), D("1.000000"), D("1.000000")),
    ]


def test_the_api_shows_the_split_and_each_segments_market(api, customer, monkeypatch):
    monkeypatch.setattr(timezone, "now", lambda: NOW)
    workload = WorkloadFactory(customer=customer)
    WorkloadInstanceFactory(
        workload=workload, started_at=at(2026, 11, 3, 8), terminated_at=at(2026, 11, 3, 12),
        spot_price=D("0.100000"), on_demand_price=D("0.400000"),
    )  # fmt: skip
    on_demand(workload=workload, started_at=at(2026, 11, 20, 11), price=D("0.400000"))  # 1 h so far

    summary = api.get("/api/v1/billing/summary", {"month": "2026-11"}).json()
    detail = api.get(f"/api/v1/workloads/{workload.id}").json()

    assert (summary["spend"], summary["spot_spend"], summary["on_demand_spend"]) == ("0.800000", "0.400000", "0.400000")
    assert [(row["provider"], row["spot_spend"], row["on_demand_spend"]) for row in summary["providers"]] == [
        ("aws", "0.400000", "0.400000")
    ]
    assert [(s["market"], s["cost"], s["ended_at"]) for s in detail["cost"]["segments"]] == [
        ("spot", "0.400000", "2026-11-03T12:00:00Z"),
        ("on_demand", "0.400000", None),
    ]


# --- the month day by day ---------------------------------------------------------


def test_the_month_day_by_day_lists_every_day_begun_with_each_days_split(mixed):
    days = daily_spend(month=NOVEMBER, now=NOW, customer_id=mixed.id)

    assert [day.day for day in days] == [date(2026, 11, n) for n in range(1, 21)]
    busy = {day.day.day: day for day in days if day.instance_hours}
    assert busy == {
        3: DaySpend(date(2026, 11, 3), D("6.500000"), D("0.400000"), D("1.000000"), D("2.600000")),
        5: DaySpend(date(2026, 11, 5), D("2.000000"), D(0), D("1.600000"), D("1.600000")),
        6: DaySpend(date(2026, 11, 6), D("1.000000"), D(0), D("0.800000"), D("0.800000")),
        20: DaySpend(date(2026, 11, 20), D("2.000000"), D("0.400000"), D(0), D("1.600000")),  # running, up to NOW
    }
    assert busy[3].spend == D("1.400000") and busy[3].saving == D("1.200000")
    summary = customer_monthly_summary(customer_id=mixed.id, month=NOVEMBER, now=NOW)
    assert sum(day.spot_spend for day in days) == summary.spot_spend
    assert sum(day.on_demand_spend for day in days) == summary.on_demand_spend
    assert sum(day.on_demand_equivalent for day in days) == summary.on_demand_equivalent


def test_a_segment_crossing_midnight_splits_into_the_two_days():
    customer = CustomerFactory()
    # 23:15 on 5 November to 00:40 on the 6th at 0.12 (on demand 0.40): 45 min, then 40 min.
    instance = WorkloadInstanceFactory(
        workload=WorkloadFactory(customer=customer), started_at=at(2026, 11, 5, 23, 15),
        terminated_at=at(2026, 11, 6, 0, 40), spot_price=D("0.120000"), on_demand_price=D("0.400000"),
    )  # fmt: skip

    days = {day.day: day for day in daily_spend(month=NOVEMBER, now=NOW, customer_id=customer.id)}

    fifth, sixth = days[date(2026, 11, 5)], days[date(2026, 11, 6)]
    assert (fifth.instance_hours, fifth.spot_spend, fifth.on_demand_equivalent) == (
        D("0.750000"),
        D("0.090000"),
        D("0.300000"),
    )
    assert (sixth.instance_hours, sixth.spot_spend, sixth.on_demand_equivalent) == (
        D("0.666667"),
        D("0.080000"),
        D("0.266667"),
    )
    assert fifth.on_demand_spend == sixth.on_demand_spend == D(0)
    record = UsageRecord.objects.get(instance=instance)
    assert fifth.spend + sixth.spend == record.total_cost == D("0.170000")
    assert sum(day.spend for day in days.values()) == record.total_cost


def test_a_segment_ending_at_midnight_counts_only_in_its_day_and_one_running_across_it_in_both():
    customer = CustomerFactory()
    workload = WorkloadFactory(customer=customer)
    WorkloadInstanceFactory(
        workload=workload, started_at=at(2026, 11, 18, 22), terminated_at=at(2026, 11, 19),
        spot_price=D("0.100000"), on_demand_price=D("0.400000"),
    )  # fmt: skip
    on_demand(workload=workload, started_at=at(2026, 11, 19, 23), price=D("0.400000"))  # running: 1 h + 12 h

    days = daily_spend(month=NOVEMBER, now=NOW, customer_id=customer.id)

    assert {day.day.day: day.spend for day in days if day.spend} == {
        18: D("0.200000"),
        19: D("0.400000"),
        20: D("4.800000"),
    }


def test_the_days_of_a_month_still_to_come_or_seen_from_before_it_began_are_none():
    assert daily_spend(month=date(2026, 12, 1), now=NOW) == ()
    assert len(daily_spend(month=date(2026, 10, 1), now=NOW)) == 31
    assert len(daily_spend(month=date(2026, 2, 1), now=NOW)) == 28


def test_bills_wholly_inside_a_day_are_summed_in_one_aggregate(mixed, django_assert_num_queries):
    for hour in range(6):
        WorkloadInstanceFactory(
            workload=WorkloadFactory(customer=mixed),
            started_at=at(2026, 11, 12, hour), terminated_at=at(2026, 11, 12, hour, 30),
        )  # fmt: skip

    with django_assert_num_queries(2):  # the aggregate, and the segments that cross a midnight or still run
        days = daily_spend(month=NOVEMBER, now=NOW, customer_id=mixed.id)

    twelfth = days[11]
    assert (twelfth.day, twelfth.instance_hours, twelfth.spot_spend) == (date(2026, 11, 12), D("3.000000"), D("0.3"))


def test_every_customers_days_are_counted_when_no_customer_is_named(mixed):
    days = daily_spend(month=NOVEMBER, now=NOW)

    assert days[2].on_demand_spend == D("10.000000")  # the other customer's 9.00 on 3 November too


def test_a_segment_starts_at_the_cloud_s_launch_and_ends_when_the_cloud_took_the_instance_back():
    instance = WorkloadInstanceFactory(
        started_at=at(2026, 11, 3, 8, 1), launched_at=at(2026, 11, 3, 8),  # recorded a minute after the launch
        reclaimed_at=at(2026, 11, 3, 10), terminated_at=at(2026, 11, 3, 10, 5),  # released 5 minutes late
        spot_price=D("0.100000"), on_demand_price=D("0.400000"),
    )  # fmt: skip

    record = UsageRecord.objects.get(instance=instance)

    assert (record.started_at, record.ended_at) == (at(2026, 11, 3, 8), at(2026, 11, 3, 10))
    assert record.total_cost == D("0.200000")
