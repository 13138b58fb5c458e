import io

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from workloads.models import ApiKey, Customer


def test_customer_create_prints_a_key_that_works_against_the_api(db):
    out = io.StringIO()
    call_command("customer_create", "Acme Robotics", "--max-concurrent-workloads", "3", stdout=out)

    customer = Customer.objects.get(name="Acme Robotics")
    assert customer.max_concurrent_workloads == 3
    raw_key = next(line.split(": ", 1)[1] for line in out.getvalue().splitlines() if line.startswith("api key: "))
    response = APIClient().get("/api/v1/workloads", HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    assert response.status_code == 200
    assert ApiKey.objects.get(customer=customer).key_hash != raw_key


def test_customer_create_with_a_webhook_gets_a_signing_secret(db):
    out = io.StringIO()
    call_command("customer_create", "Hooks Inc", "--webhook-url", "https://hooks.example.com/ca", stdout=out)
    customer = Customer.objects.get(name="Hooks Inc")
    assert len(customer.webhook_secret) >= 32
    assert f"webhook secret: {customer.webhook_secret}" in out.getvalue()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["  "], "name"),
        (["Acme", "--max-concurrent-workloads", "0"], "--max-concurrent-workloads"),
        (["Acme", "--webhook-url", "not a url"], "webhook_url"),
    ],
)
def test_customer_create_refuses_bad_input_clearly_and_creates_nothing(db, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("customer_create", *args, stdout=io.StringIO())
    assert not Customer.objects.exists()
