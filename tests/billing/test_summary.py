"""The monthly summary and a workload's cost so far, to the millionth of a dollar."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from billing.models import UsageRecord
from billing.selectors import ProviderSummary, customer_monthly_summary, workload_cost_so_far
from tests.factories import CustomerFactory, WorkloadFactory, WorkloadInstanceFactory

pytestmark = pytest.mark.django_db

D = Decimal
NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def customer():
    """Segments around November 2026, seen at NOW (3 a.m. on 1 December)."""
    customer = CustomerFactory()
    trainer = WorkloadFactory(customer=customer)
    server = WorkloadFactory(customer=customer)
    # Inside November: 3.5 h.
    WorkloadInstanceFactory(
        workload=trainer, started_at=at(2026, 11, 2, 10), terminated_at=at(2026, 11, 2, 13, 30),
        spot_price=D("0.120000"), on_demand_price=D("0.400000"),
    )  # fmt: skip
    # Across the October/November boundary: 2 h in each.
    WorkloadInstanceFactory(
        workload=server, provider="gcp", region="us-central1", instance_type="n2-standard-4",
        started_at=at(2026, 10, 31, 22), terminated_at=at(2026, 11, 1, 2),
        spot_price=D("0.250000"), on_demand_price=D("1.000000"),
    )  # fmt: skip
    # Across the November/December boundary: 1 h, then 1.5 h.
    WorkloadInstanceFactory(
        workload=trainer, started_at=at(2026, 11, 30, 23), terminated_at=at(2026, 12, 1, 1, 30),
        spot_price=D("0.120000"), on_demand_price=D("0.400000"),
    )  # fmt: skip
    # Still running since 21:44:29.5 on 30 November: 8130.5 s in November, 3 h in December so far.
    WorkloadInstanceFactory(
        workload=server, provider="azure", region="eastus", instance_type="Standard_D4s_v5",
        started_at=at(2026, 11, 30, 21, 44, 29, 500_000),
        spot_price=D("0.073457"), on_demand_price=D("0.291000"),
    )  # fmt: skip
    # September: never in these months.
    WorkloadInstanceFactory(
        workload=trainer, started_at=at(2026, 9, 1), terminated_at=at(2026, 9, 2), spot_price=D("1.000000")
    )
    # Another customer's November instance: never in this customer's figures.
    WorkloadInstanceFactory(started_at=at(2026, 11, 5), terminated_at=at(2026, 11, 6), spot_price=D("9.000000"))
    return customer


def test_november_counts_every_segments_seconds_in_the_month(customer):
    summary = customer_monthly_summary(customer_id=customer.id, month=date(2026, 11, 1), now=NOW)

    assert summary.label == "2026-11"
    assert (summary.start, summary.end) == (at(2026, 11, 1), at(2026, 12, 1))
    assert summary.currency == "USD"
    assert summary.providers == (
        ProviderSummary("aws", D("4.500000"), D("0.540000"), D("1.800000"), D("1.260000")),
        ProviderSummary("azure", D("2.258472"), D("0.165901"), D("0.657215"), D("0.491314")),
        ProviderSummary("gcp", D("2.000000"), D("0.500000"), D("2.000000"), D("1.500000")),
    )
    assert summary.instance_hours == D("8.758472")
    assert summary.spend == D("1.205901")
    assert summary.on_demand_equivalent == D("4.457215")
    assert summary.saving == D("3.251314")
    assert summary.saving_percent == D("72.94")
    assert (summary.budget, summary.budget_remaining) == (None, None)


def test_december_gets_the_rest_of_the_boundary_segment_and_the_running_one_up_to_now(customer):
    summary = customer_monthly_summary(customer_id=customer.id, month=date(2026, 12, 1), now=NOW)

    assert summary.providers == (
        ProviderSummary("aws", D("1.500000"), D("0.180000"), D("0.600000"), D("0.420000")),
        ProviderSummary("azure", D("3.000000"), D("0.220371"), D("0.873000"), D("0.652629")),
    )
    assert (summary.instance_hours, summary.spend, summary.on_demand_equivalent) == (
        D("4.500000"),
        D("0.400371"),
        D("1.473000"),
    )
    assert (summary.saving, summary.saving_percent) == (D("1.072629"), D("72.82"))


def test_october_gets_the_first_half_of_the_boundary_segment(customer):
    summary = customer_monthly_summary(customer_id=customer.id, month=date(2026, 10, 17), now=NOW)

    assert summary.month == date(2026, 10, 1)
    assert summary.providers == (ProviderSummary("gcp", D("2.000000"), D("0.500000"), D("2.000000"), D("1.500000")),)
    assert summary.spend == D("0.500000")


def test_the_split_halves_add_up_to_the_segments_bill(customer):
    record = UsageRecord.objects.get(customer=customer, provider="gcp")
    october = customer_monthly_summary(customer_id=customer.id, month=date(2026, 10, 1), now=NOW)
    november = customer_monthly_summary(customer_id=customer.id, month=date(2026, 11, 1), now=NOW)

    assert october.providers[0].spend + november.providers[-1].spend == record.total_cost == D("1.000000")


def test_a_month_with_nothing_run_is_all_zeros(customer):
    summary = customer_monthly_summary(customer_id=customer.id, month=date(2027, 1, 1), now=NOW)

    assert summary.providers == ()
    assert (summary.instance_hours, summary.spend, summary.on_demand_equivalent, summary.saving) == (D(0),) * 4
    assert summary.saving_percent is None


def test_budget_and_what_is_left_of_it(customer):
    customer.monthly_budget = D("5.00")
    customer.save()
    november = customer_monthly_summary(customer_id=customer.id, month=date(2026, 11, 1), now=NOW)
    assert (november.budget, november.budget_remaining) == (D("5.00"), D("3.794099"))

    customer.monthly_budget = D("1.00")
    customer.save()
    november = customer_monthly_summary(customer_id=customer.id, month=date(2026, 11, 1), now=NOW)
    assert (november.budget, november.budget_remaining) == (D("1.00"), D("0.000000"))
    assert november.budget_reached


def test_an_instance_that_stopped_but_is_not_billed_yet_counts_like_a_billed_one():
    billed, unbilled = CustomerFactory(), CustomerFactory()
    for customer, is_billed in ((billed, True), (unbilled, False)):
        WorkloadInstanceFactory(
            workload=WorkloadFactory(customer=customer), billed=is_billed,
            started_at=at(2026, 11, 3, 8, 0, 0, 250_000), terminated_at=at(2026, 11, 3, 9, 17, 41),
            spot_price=D("0.313700"), on_demand_price=D("0.768000"),
        )  # fmt: skip

    assert not UsageRecord.objects.filter(customer=unbilled).exists()
    figures = [
        customer_monthly_summary(customer_id=customer.id, month=date(2026, 11, 1), now=NOW).providers
        for customer in (billed, unbilled)
    ]
    # 4660.75 s: 1.294653 h, 0.406133 spot, 0.994293 on demand.
    assert (
        figures[0]
        == figures[1]
        == (ProviderSummary("aws", D("1.294653"), D("0.406133"), D("0.994293"), D("0.588160")),)
    )


def test_an_instance_without_an_on_demand_price_claims_no_saving():
    customer = CustomerFactory()
    WorkloadInstanceFactory(
        workload=WorkloadFactory(customer=customer), started_at=at(2026, 11, 3), terminated_at=at(2026, 11, 3, 2),
        spot_price=D("0.500000"), on_demand_price=None,
    )  # fmt: skip

    summary = customer_monthly_summary(customer_id=customer.id, month=date(2026, 11, 1), now=NOW)

    assert (summary.spend, summary.on_demand_equivalent, summary.saving) == (D("1.000000"), D("1.000000"), D(0))
    assert summary.saving_percent == D("0.00")


# --- a workload's cost so far --------------------------------------------------


def test_the_cost_of_a_migrated_workload_is_the_sum_of_its_segments():
    workload = WorkloadFactory()
    # Interrupted on AWS after 8415 s and billed, then migrated to GCP, running for 5940 s at `now`.
    WorkloadInstanceFactory(
        workload=workload, started_at=at(2026, 11, 10, 8), terminated_at=at(2026, 11, 10, 10, 20, 15),
        spot_price=D("0.041200"), on_demand_price=D("0.100800"),
    )  # fmt: skip
    WorkloadInstanceFactory(
        workload=workload, provider="gcp", region="us-central1", instance_type="n2-standard-2",
        started_at=at(2026, 11, 10, 10, 21), spot_price=D("0.023100"), on_demand_price=D("0.097100"),
    )  # fmt: skip

    cost = workload_cost_so_far(workload_id=workload.id, now=at(2026, 11, 10, 12))

    assert [
        (s.provider, s.region, s.instance_type, s.started_at, s.ended_at, s.hours, s.cost, s.on_demand_cost)
        for s in cost.segments
    ] == [
        ("aws", "us-east-1", "m7i.large", at(2026, 11, 10, 8), at(2026, 11, 10, 10, 20, 15),
         D("2.337500"), D("0.096305"), D("0.235620")),
        ("gcp", "us-central1", "n2-standard-2", at(2026, 11, 10, 10, 21), None,
         D("1.650000"), D("0.038115"), D("0.160215")),
    ]  # fmt: skip
    assert cost.segments[0].cost == UsageRecord.objects.get(workload=workload).total_cost
    assert cost.spend == sum(s.cost for s in cost.segments) == D("0.134420")
    assert cost.on_demand_equivalent == sum(s.on_demand_cost for s in cost.segments) == D("0.395835")
    assert cost.saving == D("0.261415")


def test_a_running_instance_accrues_by_the_second():
    workload = WorkloadFactory()
    WorkloadInstanceFactory(workload=workload, started_at=at(2026, 11, 10, 8), spot_price=D("3.600000"))

    costs = [workload_cost_so_far(workload_id=workload.id, now=at(2026, 11, 10, 8, 0, s)).spend for s in (1, 2, 3)]

    assert costs == [D("0.001000"), D("0.002000"), D("0.003000")]


def test_a_workload_that_never_got_an_instance_has_cost_nothing():
    cost = workload_cost_so_far(workload_id=WorkloadFactory().id, now=NOW)

    assert (cost.spend, cost.on_demand_equivalent, cost.saving, cost.segments) == (D(0), D(0), D(0), ())
