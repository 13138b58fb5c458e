"""A monthly budget: once this month's spend reaches it, new workloads are refused and the customer is told."""

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.utils import timezone

from arbitrage.errors import DomainError
from billing.errors import BudgetExceeded
from tests.factories import CustomerFactory, WorkloadFactory, WorkloadInstanceFactory
from workloads.models import DeliveryStatus, Notification, NotificationType, Workload
from workloads.services import workload_create

pytestmark = pytest.mark.django_db

D = Decimal
URL = "/api/v1/workloads"
VALID = {"name": "trainer", "requirements": {"vcpu": 4, "memory_gb": 16}}
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
MESSAGE = "Monthly budget reached: spent 12.340000 of 12.00 USD in 2026-11; raise the budget or wait for next month."


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def post(client, body=VALID, **extra):
    return client.post(URL, data=json.dumps(body), content_type="application/json", **extra)


@pytest.fixture
def clock(monkeypatch):
    """The application's clock, set with ``clock.set(datetime)``; it starts at NOW."""

    class Clock:
        def set(self, moment: datetime) -> None:
            monkeypatch.setattr(timezone, "now", lambda: moment)

    clock = Clock()
    clock.set(NOW)
    return clock


@pytest.fixture
def spent(customer, clock):
    """12.340000 spent in November 2026 at NOW: 12.000000 billed, 0.340000 from an instance still running."""
    workload = WorkloadFactory(customer=customer)
    WorkloadInstanceFactory(
        workload=workload, started_at=at(2026, 11, 3), terminated_at=at(2026, 11, 13), spot_price=D("0.050000")
    )  # 240 h
    WorkloadInstanceFactory(
        workload=workload, provider="gcp", started_at=at(2026, 11, 20, 10), spot_price=D("0.170000")
    )  # 2 h so far
    # October's spending does not count against November's budget.
    WorkloadInstanceFactory(
        workload=workload, started_at=at(2026, 10, 1), terminated_at=at(2026, 10, 31), spot_price=D("5.000000")
    )
    return workload


def budget(customer, amount: str | None) -> None:
    customer.monthly_budget = None if amount is None else D(amount)
    customer.save()


def test_a_create_over_the_budget_is_a_402_naming_the_spend_and_the_budget(api, customer, spent):
    budget(customer, "12.00")

    response = post(api)

    assert response.status_code == 402, response.content
    assert response.json() == {
        "error": {
            "status": 402,
            "code": "budget_exceeded",
            "message": MESSAGE,
            "month": "2026-11",
            "spend": "12.340000",
            "budget": "12.00",
            "currency": "USD",
        }
    }
    assert list(Workload.objects.filter(customer=customer)) == [spent]


def test_the_refusal_reaches_the_customer_as_one_budget_exceeded_notification_a_month(api, customer, spent, clock):
    budget(customer, "12.00")

    assert post(api).status_code == 402
    assert post(api, {**VALID, "name": "again"}).status_code == 402

    notification = Notification.objects.get(customer=customer)
    assert notification.type == NotificationType.BUDGET_EXCEEDED
    assert notification.workload is None
    assert notification.delivery_status == DeliveryStatus.NO_WEBHOOK  # kept for the customer all the same
    assert notification.payload == {
        "type": "BUDGET_EXCEEDED",
        "customerId": str(customer.id),
        "month": "2026-11",
        "spend": "12.340000",
        "budget": "12.00",
        "currency": "USD",
        "message": MESSAGE,
    }

    # Still over budget in December: December's refusal is a notification of its own.
    clock.set(at(2026, 12, 1, 1))
    budget(customer, "0.10")
    assert post(api).status_code == 402
    assert sorted(n.payload["month"] for n in Notification.objects.filter(customer=customer)) == ["2026-11", "2026-12"]


def test_spend_exactly_at_the_budget_is_refused(api, customer, spent):
    budget(customer, "12.34")

    error = post(api).json()["error"]

    assert error["message"] == MESSAGE.replace("of 12.00", "of 12.34")
    assert Workload.objects.filter(customer=customer).count() == 1


def test_under_the_budget_the_workload_is_created(api, customer, spent):
    budget(customer, "12.35")

    response = post(api)

    assert response.status_code == 201, response.content
    assert Workload.objects.filter(customer=customer, name="trainer").exists()
    assert not Notification.objects.filter(customer=customer).exists()


def test_without_a_budget_there_is_no_limit(api, customer, spent):
    budget(customer, None)

    assert post(api).status_code == 201


def test_next_month_starts_from_zero(api, customer, spent, clock):
    budget(customer, "12.00")
    assert post(api).status_code == 402

    clock.set(at(2026, 12, 1, 0, 30))  # December so far: the running instance's half hour, 0.085000

    assert post(api).status_code == 201


def test_a_retry_of_a_workload_made_before_the_budget_was_reached_still_answers(api, customer, spent):
    first = post(api, HTTP_IDEMPOTENCY_KEY="order-42")
    assert first.status_code == 201
    budget(customer, "12.00")

    retry = post(api, HTTP_IDEMPOTENCY_KEY="order-42")

    assert retry.status_code == 201
    assert retry["Idempotent-Replayed"] == "true"
    assert retry.json()["id"] == first.json()["id"]


def test_the_service_refuses_with_a_domain_error_and_stores_nothing(clock):
    customer = CustomerFactory(monthly_budget=D("0.01"))
    WorkloadInstanceFactory(
        workload=WorkloadFactory(customer=customer), started_at=at(2026, 11, 20, 11), spot_price=D("0.010000")
    )

    with pytest.raises(BudgetExceeded) as refused:
        workload_create(customer=customer, name="x", requirements={"vcpu": 1, "memory_gb": 1}, config={})

    assert isinstance(refused.value, DomainError)
    assert refused.value.status == 402
    assert "spent 0.010000 of 0.01 USD in 2026-11" in refused.value.message
    assert Workload.objects.filter(customer=customer).count() == 1
    assert Notification.objects.filter(customer=customer, type=NotificationType.BUDGET_EXCEEDED).count() == 1
