"""The billing admin: usage records by provider, customer and month, and the monthly summary page."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from billing.admin import monthly_summary_url
from tests.factories import CustomerFactory, WorkloadFactory, WorkloadInstanceFactory

pytestmark = pytest.mark.django_db

D = Decimal
CHANGELIST = "/admin/billing/usagerecord/"


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def operator(client):
    user = get_user_model().objects.create_superuser("operator", "op@example.com", "a-long-password-1")
    client.force_login(user)
    return client


@pytest.fixture
def acme():
    customer = CustomerFactory(name="Acme", monthly_budget=D("50.00"))
    workload = WorkloadFactory(customer=customer, name="trainer")
    WorkloadInstanceFactory(
        workload=workload, instance_type="m7i.large", started_at=at(2026, 11, 3), terminated_at=at(2026, 11, 3, 10),
        spot_price=D("0.120000"), on_demand_price=D("0.400000"),
    )  # fmt: skip
    WorkloadInstanceFactory(
        workload=workload, provider="gcp", instance_type="n2-standard-4",
        started_at=at(2026, 10, 31, 23), terminated_at=at(2026, 11, 1, 1),
        spot_price=D("0.250000"), on_demand_price=D("1.000000"),
    )  # fmt: skip
    WorkloadInstanceFactory(
        workload=workload, instance_type="c7g.xlarge", started_at=at(2026, 9, 3), terminated_at=at(2026, 9, 4)
    )
    return customer


def test_usage_records_filter_by_provider_customer_and_month(operator, acme):
    WorkloadInstanceFactory(instance_type="r7i.2xlarge", started_at=at(2026, 11, 5), terminated_at=at(2026, 11, 6))

    november = operator.get(CHANGELIST, {"month": "2026-11", "customer__id__exact": str(acme.id)})
    gcp = operator.get(CHANGELIST, {"provider": "gcp"})

    assert november.status_code == 200
    assert [r.instance_type for r in november.context["cl"].result_list] == ["m7i.large", "n2-standard-4"]
    assert [r.instance_type for r in gcp.context["cl"].result_list] == ["n2-standard-4"]
    # The boundary segment is in October too, and a malformed month shows nothing rather than failing.
    october = operator.get(CHANGELIST, {"month": "2026-10"})
    assert [r.instance_type for r in october.context["cl"].result_list] == ["n2-standard-4"]
    assert operator.get(CHANGELIST, {"month": "2026-99"}).status_code == 200


def test_the_changelist_links_to_the_monthly_summary(operator, acme):
    response = operator.get(CHANGELIST)

    assert monthly_summary_url() == reverse("admin:billing_usagerecord_summary")
    assert f'href="{monthly_summary_url()}"'.encode() in response.content


def test_the_monthly_summary_page_shows_the_apis_figures(operator, acme):
    response = operator.get(reverse("admin:billing_usagerecord_summary"), {"customer": acme.id, "month": "2026-11"})

    assert response.status_code == 200
    summary = response.context["summary"]
    assert (summary.spend, summary.on_demand_equivalent, summary.saving) == (
        D("1.450000"),
        D("5.000000"),
        D("3.550000"),
    )
    assert [(row.provider, row.spend) for row in summary.providers] == [("aws", D("1.200000")), ("gcp", D("0.250000"))]
    page = response.content.decode()
    for figure in ("11.000000", "1.450000", "5.000000", "3.550000", "71.00", "50.00", "48.550000"):
        assert figure in page
    assert "Monthly summary: Acme, 2026-11" in page


def test_the_summary_page_without_a_choice_or_with_a_bad_month_answers_with_the_form(operator, acme):
    blank = operator.get(reverse("admin:billing_usagerecord_summary"))
    bad = operator.get(reverse("admin:billing_usagerecord_summary"), {"customer": acme.id, "month": "2026-13"})

    assert blank.status_code == 200 and blank.context["summary"] is None
    assert bad.status_code == 200 and bad.context["summary"] is None
    assert "A month as YYYY-MM" in bad.content.decode()


def test_the_summary_page_is_for_operators_only(client, acme):
    response = client.get(reverse("admin:billing_usagerecord_summary"), {"customer": acme.id})

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_the_customer_page_links_to_its_monthly_summary(acme, operator):
    page = operator.get(f"/admin/accounts/customer/{acme.id}/change/").content.decode()
    assert f'<a href="{monthly_summary_url(customer_id=acme.id)}">Monthly summary</a>' in page
