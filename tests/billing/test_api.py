"""GET /api/v1/billing/summary and the cost in a workload's detail, as a customer sees them."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from tests.errors import assert_error
from tests.factories import WorkloadFactory, WorkloadInstanceFactory

D = Decimal
URL = "/api/v1/billing/summary"
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def clock(monkeypatch):
    """The whole application's clock stands at NOW."""
    monkeypatch.setattr(timezone, "now", lambda: NOW)
    return NOW


@pytest.fixture
def november(customer):
    """One finished segment and one running segment of ``customer`` in November 2026."""
    workload = WorkloadFactory(customer=customer)
    WorkloadInstanceFactory(
        workload=workload, started_at=at(2026, 11, 3), terminated_at=at(2026, 11, 3, 10),
        spot_price=D("0.120000"), on_demand_price=D("0.400000"),
    )  # fmt: skip
    WorkloadInstanceFactory(
        workload=workload, provider="gcp", region="us-central1", instance_type="n2-standard-4",
        started_at=at(2026, 11, 20, 9, 30), spot_price=D("0.200000"), on_demand_price=D("0.800000"),
    )  # fmt: skip
    return workload


NOVEMBER = {
    "month": "2026-11",
    "currency": "USD",
    "instance_hours": "12.500000",
    "spend": "1.700000",
    "spot_spend": "1.700000",
    "on_demand_spend": "0.000000",
    "on_demand_equivalent": "6.000000",
    "saving": "4.300000",
    "saving_percent": "71.67",
    "budget": None,
    "budget_remaining": None,
    "providers": [
        {
            "provider": "aws",
            "instance_hours": "10.000000",
            "spend": "1.200000",
            "spot_spend": "1.200000",
            "on_demand_spend": "0.000000",
            "on_demand_equivalent": "4.000000",
            "saving": "2.800000",
        },
        {
            "provider": "gcp",
            "instance_hours": "2.500000",
            "spend": "0.500000",
            "spot_spend": "0.500000",
            "on_demand_spend": "0.000000",
            "on_demand_equivalent": "2.000000",
            "saving": "1.500000",
        },
    ],
}


def test_the_summary_needs_an_api_key(db):
    response = APIClient().get(URL)
    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == "Bearer"
    assert_error(APIClient().get(URL, HTTP_AUTHORIZATION="Bearer ca_wrong"), 401)


def test_the_summary_of_a_month_with_money_as_decimal_strings(api, november, clock):
    response = api.get(URL, {"month": "2026-11"})

    assert response.status_code == 200, response.content
    assert response.json() == NOVEMBER


def test_the_month_defaults_to_the_current_one(api, november, clock):
    assert api.get(URL).json() == NOVEMBER


def test_the_budget_and_what_is_left_of_it(api, customer, november, clock):
    customer.monthly_budget = D("10.00")
    customer.save()

    body = api.get(URL).json()

    assert (body["budget"], body["budget_remaining"]) == ("10.00", "8.300000")


def test_another_month_shows_only_that_months_figures(api, november, clock):
    body = api.get(URL, {"month": "2026-10"}).json()

    assert body["month"] == "2026-10"
    assert (body["instance_hours"], body["spend"], body["saving"]) == ("0.000000", "0.000000", "0.000000")
    assert (body["saving_percent"], body["providers"]) == (None, [])


@pytest.mark.parametrize(
    "params",
    [
        {"month": "2026-13"},
        {"month": "2026-00"},
        {"month": "2026-1"},
        {"month": "11-2026"},
        {"month": "2026-11-01"},
        {"month": "november"},
        {"month": ""},
        {"month": "1999-12"},
        {"month": "10000-01"},
        {"month": "\uff12\uff10\uff12\uff16-11"},  # full-width digits
    ],
)
def test_a_malformed_month_is_a_400_naming_the_parameter(api, params):
    error = assert_error(api.get(URL, params), 400, "invalid")
    assert list(error["fields"]) == ["month"]


def test_an_unknown_parameter_is_a_400(api):
    error = assert_error(api.get(URL, {"monht": "2026-11"}), 400, "invalid")
    assert list(error["fields"]) == ["monht"]


def test_another_customers_usage_is_never_shown(api, other_api, november, clock):
    other = other_api.get(URL, {"month": "2026-11"}).json()
    assert (other["spend"], other["instance_hours"], other["providers"]) == ("0.000000", "0.000000", [])

    assert api.get(URL, {"month": "2026-11"}).json() == NOVEMBER


def test_the_summary_is_in_the_openapi_schema(client, db):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()

    operation = schema["paths"]["/api/v1/billing/summary"]["get"]
    assert operation["operationId"] == "billing_summary"
    assert [p["name"] for p in operation["parameters"]] == ["month"]
    detail = schema["components"]["schemas"]["WorkloadDetail"]["properties"]
    assert "cost" in detail


# --- the cost in a workload's detail ----------------------------------------------


def test_a_workloads_detail_has_its_cost_so_far(api, november, clock):
    body = api.get(f"/api/v1/workloads/{november.id}").json()

    assert body["cost"] == {
        "currency": "USD",
        "spend": "1.700000",
        "on_demand_equivalent": "6.000000",
        "saving": "4.300000",
        "segments": [
            {
                "provider": "aws",
                "region": "us-east-1",
                "instance_type": "m7i.large",
                "market": "spot",
                "started_at": "2026-11-03T00:00:00Z",
                "ended_at": "2026-11-03T10:00:00Z",
                "hours": "10.000000",
                "spot_price_per_hour": "0.120000",
                "cost": "1.200000",
                "on_demand_cost": "4.000000",
            },
            {
                "provider": "gcp",
                "region": "us-central1",
                "instance_type": "n2-standard-4",
                "market": "spot",
                "started_at": "2026-11-20T09:30:00Z",
                "ended_at": None,
                "hours": "2.500000",
                "spot_price_per_hour": "0.200000",
                "cost": "0.500000",
                "on_demand_cost": "2.000000",
            },
        ],
    }


def test_a_running_workloads_cost_grows_with_the_clock(api, november, monkeypatch):
    monkeypatch.setattr(timezone, "now", lambda: at(2026, 11, 20, 10, 30))
    before = api.get(f"/api/v1/workloads/{november.id}").json()["cost"]["spend"]
    monkeypatch.setattr(timezone, "now", lambda: at(2026, 11, 20, 11, 30))
    after = api.get(f"/api/v1/workloads/{november.id}").json()["cost"]["spend"]

    assert (before, after) == ("1.400000", "1.600000")
