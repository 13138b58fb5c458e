import io

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from accounts.models import ApiKey, Customer


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


def test_workload_command_submits_shows_and_terminates(db, django_capture_on_commit_callbacks):
    from tests.factories import CustomerFactory
    from workloads.models import Workload, WorkloadStatus

    customer = CustomerFactory(name="Ops")
    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=False):
        call_command(
            "workload", "submit", "--customer", "Ops", "--name", "batch", "--vcpu", "2", "--memory-gb", "4",
            "--provider", "gcp", "--storage", stdout=out,
        )  # fmt: skip
    workload = Workload.objects.get(customer=customer)
    assert workload.requirements["providers"] == ["gcp"]
    assert workload.config["storage"]["enabled"] is True
    assert f"submitted {workload.id}" in out.getvalue()

    shown = io.StringIO()
    call_command("workload", "show", str(workload.id), stdout=shown)
    text = shown.getvalue()
    assert "provision run" in text
    for step in ("validate-quotas", "find-placement", "provision-cloud-resources", "notify-customer"):
        assert step in text

    with django_capture_on_commit_callbacks(execute=False):
        call_command("workload", "terminate", str(workload.id), stdout=io.StringIO())
    workload.refresh_from_db()
    assert workload.status == WorkloadStatus.STOPPING


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["submit", "--customer", "Nobody", "--name", "x", "--vcpu", "2", "--memory-gb", "4"], "--customer"),
        (["submit", "--customer", "Ops", "--name", "x", "--vcpu", "-2", "--memory-gb", "4"], "requirements.vcpu"),
        (["submit", "--customer", "Ops", "--name", "x", "--vcpu", "2", "--memory-gb", "4", "--gpu-type", "K80",
          "--gpu-count", "1"], "requirements.gpu_type"),
        (["show", "not-an-id"], "no workload"),
        (["terminate", "00000000-0000-0000-0000-000000000000"], "no workload"),
    ],
)  # fmt: skip
def test_workload_command_refuses_bad_input_clearly(db, args, message):
    from tests.factories import CustomerFactory

    CustomerFactory(name="Ops")
    with pytest.raises(CommandError, match=message):
        call_command("workload", *args, stdout=io.StringIO())
