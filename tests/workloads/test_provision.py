"""Provisioning end to end on a real Celery worker and the local cloud."""

import hmac
import json
import urllib.request
from decimal import Decimal
from hashlib import sha256

import pytest
from rest_framework.test import APIClient

from billing.models import UsageRecord
from placement.selectors import placement_candidates
from tests.factories import customer_with_key
from tests.live import wait_until
from workloads import routing
from workloads.models import (
    DeliveryStatus,
    HealthMonitor,
    Notification,
    RunStatus,
    WorkflowRun,
    Workload,
    WorkloadInstance,
    WorkloadRouting,
    WorkloadStatus,
)
from workloads.notifications import SIGNATURE_HEADER

S = WorkloadStatus
pytestmark = pytest.mark.django_db(transaction=True)

REQUEST = {"name": "web", "requirements": {"vcpu": 2, "memory_gb": 4}}


def api_for(customer_key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {customer_key}")
    return client


def submit(client: APIClient, body: dict | None = None) -> Workload:
    response = client.post("/api/v1/workloads", data=json.dumps(body or REQUEST), content_type="application/json")
    assert response.status_code == 201, response.content
    return Workload.objects.get(id=response.json()["id"])


def status_of(workload: Workload) -> str:
    workload.refresh_from_db()
    return workload.status


def reaches(workload: Workload, *states: str, timeout: float = 90) -> str:
    return wait_until(lambda: status_of(workload) in states and workload.status, timeout=timeout, what=f"{states}")


def run_succeeds(workload: Workload, kind: str) -> None:
    wait_until(
        lambda: WorkflowRun.objects.filter(workload=workload, kind=kind, status=RunStatus.SUCCEEDED).exists(),
        what=f"the {kind} run to succeed",
    )


def get_json(url: str) -> tuple[int, dict]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, json.loads(response.read())


def test_a_workload_runs_and_terminates_cleanly(catalog, worker, webhook_receiver, local_cloud_clean):
    _customer, key = customer_with_key(webhook_url=webhook_receiver.url, webhook_secret="s3cret-for-tests")
    client = api_for(key)
    workload = submit(client)

    assert reaches(workload, S.RUNNING, S.FAILED) == S.RUNNING, workload.failure_reason
    run_succeeds(workload, "provision")

    # A live process answers /health where routing says the workload is.
    route = WorkloadRouting.objects.get(workload=workload)
    assert routing.kv_get_endpoint(workload_id=workload.id) == route.endpoint
    assert routing.kv_get_status(workload_id=workload.id) == S.RUNNING
    code, health = get_json(f"http://{route.endpoint}/health")
    assert code == 200 and health["status"] == "ok"
    instance = WorkloadInstance.objects.get(workload=workload)
    assert instance.status == "RUNNING" and instance.instance_id == route.instance_id
    assert HealthMonitor.objects.get(workload=workload).active

    # WORKLOAD_READY reached the customer's webhook, signed with its secret.
    hook = wait_until(lambda: webhook_receiver.received, what="the READY webhook")[0]
    expected = "sha256=" + hmac.new(b"s3cret-for-tests", hook["body"], sha256).hexdigest()
    assert hook["headers"][SIGNATURE_HEADER] == expected
    assert hook["json"]["type"] == "WORKLOAD_READY"
    assert hook["json"]["workloadId"] == str(workload.id)
    assert hook["json"]["provider"] == instance.provider
    assert Decimal(hook["json"]["estimatedCostPerHour"]) == instance.spot_price
    wait_until(
        lambda: Notification.objects.filter(workload=workload, delivery_status=DeliveryStatus.DELIVERED).exists()
    )

    response = client.post(f"/api/v1/workloads/{workload.id}/terminate")
    assert response.status_code == 202
    assert reaches(workload, S.TERMINATED) == S.TERMINATED

    assert not local_cloud_clean.process_alive(instance.instance_id)
    assert not WorkloadRouting.objects.filter(workload=workload).exists()
    assert routing.kv_get_endpoint(workload_id=workload.id) is None
    assert not HealthMonitor.objects.get(workload=workload).active
    run_succeeds(workload, "terminate")
    record = UsageRecord.objects.get(workload=workload)
    instance.refresh_from_db()
    [launched] = [
        info.launched_at for info in local_cloud_clean.instances_all() if info.instance_id == instance.instance_id
    ]
    assert instance.launched_at == launched <= instance.created_at  # billed from the launch, as providers do
    seconds = Decimal(str((instance.terminated_at - launched).total_seconds()))
    assert record.total_cost == (seconds / 3600 * instance.spot_price).quantize(Decimal("0.000001"))
    assert record.instance == instance
    assert workload.terminated_at is not None and workload.termination_reason


def test_a_create_that_keeps_failing_fails_the_workload_and_leaves_nothing(catalog, worker, local_cloud_clean):
    local_cloud_clean.faults_set(fail_next_creates=100)
    _, key = customer_with_key()
    workload = submit(api_for(key))

    assert reaches(workload, S.FAILED, S.RUNNING) == S.FAILED
    run = WorkflowRun.objects.get(workload=workload, kind="provision")
    assert run.status == RunStatus.FAILED and run.failed_step == "provision-cloud-resources"
    assert run.steps.get(name="provision-cloud-resources").attempts == 4  # the first try and 3 retries
    assert "after 4 attempts" in workload.failure_reason
    assert not [i for i in local_cloud_clean.instances_all() if local_cloud_clean.process_alive(i.instance_id)]


def test_a_create_that_fails_three_times_then_works_is_retried_to_running(catalog, worker, local_cloud_clean):
    local_cloud_clean.faults_set(fail_next_creates=3)
    _, key = customer_with_key()
    workload = submit(api_for(key))

    assert reaches(workload, S.FAILED, S.RUNNING) == S.RUNNING, workload.failure_reason
    step = WorkflowRun.objects.get(workload=workload).steps.get(name="provision-cloud-resources")
    assert step.attempts == 4
    assert WorkloadInstance.objects.filter(workload=workload).count() == 1


def test_a_workload_that_never_gets_healthy_fails_and_its_instance_is_terminated(catalog, worker, local_cloud_clean):
    local_cloud_clean.faults_set(never_healthy=True)
    _, key = customer_with_key()
    workload = submit(api_for(key))

    assert reaches(workload, S.FAILED, S.RUNNING, timeout=120) == S.FAILED
    assert "Timeout waiting for workload health check" in workload.failure_reason
    instance = WorkloadInstance.objects.get(workload=workload)
    wait_until(lambda: not local_cloud_clean.process_alive(instance.instance_id), what="the instance to stop")
    wait_until(lambda: UsageRecord.objects.filter(instance=instance).exists(), what="its usage record")
    assert not WorkloadRouting.objects.filter(workload=workload).exists()


def test_no_capacity_in_the_cheapest_pool_places_on_the_next_offer(catalog, worker, local_cloud_clean):
    best, runner_up = placement_candidates(requirements=dict(REQUEST["requirements"], gpu_count=0), limit=2)
    local_cloud_clean.faults_set(
        no_capacity_pools=[
            {
                "provider": best.provider,
                "region": best.region,
                "availability_zone": best.availability_zone,
                "instance_type": best.instance_type,
            }
        ]
    )
    _, key = customer_with_key()
    workload = submit(api_for(key))

    assert reaches(workload, S.RUNNING, S.FAILED) == S.RUNNING, workload.failure_reason
    instance = WorkloadInstance.objects.get(workload=workload)
    assert (instance.provider, instance.region, instance.availability_zone, instance.instance_type) == (
        runner_up.provider,
        runner_up.region,
        runner_up.availability_zone,
        runner_up.instance_type,
    )
    skipped = WorkflowRun.objects.get(workload=workload).steps.get(name="provision-cloud-resources").result["skipped"]
    assert skipped and "InsufficientInstanceCapacity" in skipped[0]["error"]


def test_cancelling_while_provisioning_stops_the_run_and_cleans_up(catalog, worker_factory, local_cloud_clean):
    worker_factory(env={"LOCAL_CLOUD_BOOT_DELAY_MS": "30000"})
    _, key = customer_with_key()
    client = api_for(key)
    workload = submit(client)
    wait_until(lambda: WorkloadInstance.objects.filter(workload=workload).exists(), what="an instance")

    assert client.post(f"/api/v1/workloads/{workload.id}/terminate").status_code == 202

    assert reaches(workload, S.TERMINATED) == S.TERMINATED
    instance = WorkloadInstance.objects.get(workload=workload)
    assert not local_cloud_clean.process_alive(instance.instance_id)
    assert WorkflowRun.objects.get(workload=workload, kind="provision").status == RunStatus.CANCELLED
    wait_until(lambda: UsageRecord.objects.filter(instance=instance).exists(), what="its usage record")


def test_quota_holds_when_many_workloads_are_submitted_at_once(catalog, worker_factory):
    worker_factory(concurrency=2)
    worker_factory(concurrency=2)
    _customer, key = customer_with_key(max_concurrent_workloads=5)
    client = api_for(key)
    workloads = [submit(client, dict(REQUEST, name=f"w{i}")) for i in range(20)]

    wait_until(lambda: all(status_of(w) in (S.RUNNING, S.FAILED) for w in workloads), timeout=180, what="all to settle")
    statuses = [w.status for w in workloads]
    assert statuses.count(S.RUNNING) == 5
    assert statuses.count(S.FAILED) == 15
    for failed in (w for w in workloads if w.status == S.FAILED):
        assert failed.failure_reason == "Quota exceeded: max 5 concurrent workloads"
