"""Spot interruptions and health verdicts, recovered by migration on a real worker."""

import io
import json
import urllib.request
from decimal import Decimal

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from accounts.tokens import agent_token_for
from billing.models import UsageRecord
from tests.factories import WorkloadFactory, customer_with_key
from tests.live import wait_until
from tests.workloads.test_provision import api_for, get_json, reaches, run_succeeds, submit
from workloads import routing
from workloads.models import Notification, WorkflowRun, WorkloadEvent, WorkloadInstance, WorkloadRouting, WorkloadStatus
from workloads.recovery import health_sweep_run

S = WorkloadStatus


@pytest.mark.django_db(transaction=True)
def test_a_spot_interruption_migrates_the_workload_to_another_pool(catalog, worker, local_cloud_clean, settings):
    settings.HEALTH_CHECK_TIMEOUT_SECONDS = 1
    _, key = customer_with_key()
    workload = submit(api_for(key))
    assert reaches(workload, S.RUNNING, S.FAILED) == S.RUNNING, workload.failure_reason
    run_succeeds(workload, "provision")
    first = WorkloadInstance.objects.get(workload=workload)

    local_cloud_clean.interrupt(first.instance_id)  # the cloud reclaims the instance
    report = health_sweep_run()  # the cloud-side signal: the sweep finds it preempted

    assert report.interrupted == 1
    interrupted = WorkloadEvent.objects.get(workload=workload, name="spot_interrupt")
    assert interrupted.detail["signal"] == "cloud"
    run_succeeds(workload, "migrate")
    workload.refresh_from_db()
    assert workload.status == S.RUNNING

    first.refresh_from_db()
    second = WorkloadInstance.objects.exclude(id=first.id).get(workload=workload)
    assert first.terminated_at is not None and second.terminated_at is None
    assert (first.provider, first.region, first.availability_zone, first.instance_type) != (
        second.provider,
        second.region,
        second.availability_zone,
        second.instance_type,
    )
    assert UsageRecord.objects.filter(instance=first).count() == 1
    route = WorkloadRouting.objects.get(workload=workload)
    assert route.instance_id == second.instance_id
    assert routing.kv_get_endpoint(workload_id=workload.id) == route.endpoint
    assert get_json(f"http://{route.endpoint}/")[1]["instance_id"] == second.instance_id
    migrated = Notification.objects.get(workload=workload, type="WORKLOAD_MIGRATED")
    assert migrated.payload["from"]["instanceType"] == first.instance_type
    assert migrated.payload["to"]["instanceType"] == second.instance_type

    # Terminating later bills the second segment too: one record per instance.
    assert api_for(key).post(f"/api/v1/workloads/{workload.id}/terminate").status_code == 202
    assert reaches(workload, S.TERMINATED) == S.TERMINATED
    run_succeeds(workload, "terminate")
    assert UsageRecord.objects.filter(workload=workload).count() == 2


@pytest.mark.django_db(transaction=True)
def test_an_unhealthy_workload_with_recovery_terminate_is_terminated(catalog, worker, local_cloud_clean, settings):
    settings.HEALTH_CHECK_TIMEOUT_SECONDS = 1
    _, key = customer_with_key()
    body = {"name": "fragile", "requirements": {"vcpu": 2, "memory_gb": 4}, "recovery_policy": "terminate"}
    workload = submit(api_for(key), body)
    assert reaches(workload, S.RUNNING, S.FAILED) == S.RUNNING
    run_succeeds(workload, "provision")
    endpoint = WorkloadRouting.objects.get(workload=workload).endpoint
    urllib.request.urlopen(urllib.request.Request(f"http://{endpoint}/_agent/unhealthy", method="POST"), timeout=5)

    for _ in range(3):
        health_sweep_run()

    assert reaches(workload, S.TERMINATED) == S.TERMINATED
    assert WorkloadEvent.objects.filter(workload=workload, name="health_check_fail").exists()
    instance = WorkloadInstance.objects.get(workload=workload)
    wait_until(lambda: not local_cloud_clean.process_alive(instance.instance_id), what="the instance to stop")


def test_the_agent_reports_an_interruption_with_its_token(db, django_capture_on_commit_callbacks, local_cloud_clean):
    workload = WorkloadFactory(status=S.RUNNING)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {agent_token_for(workload.id)}")
    body = json.dumps({"checkpoint": "20261128T120000Z", "reason": "notice"})

    with django_capture_on_commit_callbacks(execute=False):
        first = client.post("/api/v1/agent/interruption", data=body, content_type="application/json")
        again = client.post("/api/v1/agent/interruption", data=body, content_type="application/json")

    assert first.status_code == again.status_code == 202
    workload.refresh_from_db()
    assert workload.status == S.INTERRUPTED
    assert WorkloadEvent.objects.filter(workload=workload, name="spot_interrupt").count() == 1
    assert WorkloadEvent.objects.get(workload=workload, name="spot_interrupt").detail["signal"] == "agent"
    assert WorkloadEvent.objects.filter(workload=workload, name="final-checkpoint").count() == 2


@pytest.mark.parametrize(
    "header", ["Bearer wat_nonsense", "Bearer wat_00000000-0000-0000-0000-000000000000_bad", "", "Bearer ca_key"]
)
def test_the_agent_endpoint_refuses_anything_but_a_valid_agent_token(db, header):
    workload = WorkloadFactory(status=S.RUNNING)
    response = APIClient().post("/api/v1/agent/interruption", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    workload.refresh_from_db()
    assert workload.status == S.RUNNING


@pytest.mark.django_db(transaction=True)
def test_the_agent_reports_the_notice_and_the_workload_migrates(
    catalog, worker_factory, local_cloud_clean, live_server
):
    # The instances reach this API (the live server) with their agent tokens.
    worker_factory(env={"PUBLIC_API_URL": live_server.url})
    _, key = customer_with_key()
    workload = submit(api_for(key))
    assert reaches(workload, S.RUNNING, S.FAILED) == S.RUNNING, workload.failure_reason
    run_succeeds(workload, "provision")
    first = WorkloadInstance.objects.get(workload=workload)

    out = io.StringIO()
    call_command("spot_interrupt", str(workload.id), "--grace", "20", stdout=out)
    assert "interruption notice given" in out.getvalue()

    event = wait_until(
        lambda: WorkloadEvent.objects.filter(workload=workload, name="spot_interrupt").first(), what="the report"
    )
    assert event.detail["signal"] == "agent"
    run_succeeds(workload, "migrate")
    workload.refresh_from_db()
    assert workload.status == S.RUNNING
    second = WorkloadInstance.objects.exclude(id=first.id).get(workload=workload)
    assert (
        second.instance_type != first.instance_type
        or second.provider != first.provider
        or (second.region != first.region or second.availability_zone != first.availability_zone)
    )
    assert not local_cloud_clean.process_alive(first.instance_id)


DURABLE = {
    "name": "long-job",
    "requirements": {"vcpu": 2, "memory_gb": 4},
    "config": {"storage": {"enabled": True}, "env": {"AGENT_CHECKPOINT_SECONDS": "1"}},
}


def checkpoint_progress(workload, checkpoint_id: str) -> int:
    from storage.models import WorkloadCheckpoint

    checkpoint = WorkloadCheckpoint.objects.get(workload=workload, checkpoint_id=checkpoint_id)
    return int(checkpoint.manifest["metadata"]["progress"])


def progress_of(endpoint: str) -> dict:
    return get_json(f"http://{endpoint}/")[1]


@pytest.fixture
def durable_workload(catalog, worker_factory, local_cloud_clean, live_server, settings):
    """A storage-enabled workload, RUNNING, whose agent checkpoints every second to this API."""
    settings.PUBLIC_API_URL = live_server.url  # the storage URLs the API hands out point here
    worker_factory(env={"PUBLIC_API_URL": live_server.url})
    _, key = customer_with_key()
    workload = submit(api_for(key), DURABLE)
    assert reaches(workload, S.RUNNING, S.FAILED) == S.RUNNING, workload.failure_reason
    run_succeeds(workload, "provision")
    from storage.models import WorkloadCheckpoint

    wait_until(
        lambda: WorkloadCheckpoint.objects.filter(workload=workload, status="COMPLETE").count() >= 2,
        timeout=60,
        what="periodic checkpoints",
    )
    return workload


@pytest.mark.django_db(transaction=True)
def test_a_checkpointed_workload_resumes_its_work_on_the_new_instance(durable_workload, local_cloud_clean):
    workload = durable_workload
    first = WorkloadInstance.objects.get(workload=workload)

    call_command("spot_interrupt", str(workload.id), "--grace", "20", stdout=io.StringIO())

    final = wait_until(
        lambda: WorkloadEvent.objects.filter(workload=workload, name="final-checkpoint").first(),
        what="the final checkpoint",
    )
    saved = checkpoint_progress(workload, final.detail["checkpoint"])
    run_succeeds(workload, "migrate")
    waited = WorkflowRun.objects.get(workload=workload, kind="migrate").steps.get(name="wait-for-final-checkpoint")
    assert waited.result["final_checkpoint"] == final.detail["checkpoint"]  # used at once, not timed out
    workload.refresh_from_db()
    assert workload.status == S.RUNNING
    second = WorkloadInstance.objects.exclude(id=first.id).get(workload=workload)
    route = WorkloadRouting.objects.get(workload=workload)
    assert route.instance_id == second.instance_id

    answer = progress_of(route.endpoint)
    assert answer["instance_id"] == second.instance_id
    assert answer["restored_progress"] >= saved > 0  # resumed from the final checkpoint, not restarted
    assert answer["progress"] >= answer["restored_progress"]
    assert UsageRecord.objects.filter(instance=first).count() == 1
    assert Notification.objects.filter(workload=workload, type="WORKLOAD_MIGRATED").exists()


@pytest.mark.django_db(transaction=True)
def test_with_the_agent_dead_the_latest_periodic_checkpoint_is_restored(durable_workload, local_cloud_clean, settings):
    from storage.models import WorkloadCheckpoint

    settings.HEALTH_CHECK_TIMEOUT_SECONDS = 1
    workload = durable_workload
    first = WorkloadInstance.objects.get(workload=workload)

    local_cloud_clean.interrupt(first.instance_id)  # reclaimed with no notice: no final checkpoint
    latest = WorkloadCheckpoint.objects.filter(workload=workload, status="COMPLETE").order_by("-checkpoint_id").first()
    saved = checkpoint_progress(workload, latest.checkpoint_id)
    health_sweep_run()

    run_succeeds(workload, "migrate")
    route = WorkloadRouting.objects.get(workload=workload)
    answer = progress_of(route.endpoint)
    assert answer["instance_id"] != first.instance_id
    assert answer["restored_progress"] >= saved > 0
    assert not WorkloadEvent.objects.filter(workload=workload, name="final-checkpoint").exists()


def make_cheaper(instance, *, factor: str = "0.5"):
    """Another pool of the same kind gets a much lower spot price (a catalog refresh would)."""
    from django.utils import timezone

    from placement.clouds.base import ObservedPrice
    from placement.selectors import placement_candidates
    from placement.services import prices_apply

    pool = (instance.provider, instance.region, instance.availability_zone, instance.instance_type)
    other = placement_candidates(requirements={"vcpu": 2, "memory_gb": 4}, limit=1, exclude_pools=[pool])[0]
    price = (instance.spot_price * Decimal(factor)).quantize(Decimal("0.000001"))
    observed = ObservedPrice(
        provider=other.provider,
        region=other.region,
        availability_zone=other.availability_zone,
        instance_type=other.instance_type,
        spot_price=price,
        observed_at=timezone.now(),
    )
    prices_apply(provider=other.provider, prices=[observed], source="test")
    return other


@pytest.mark.django_db(transaction=True)
def test_rebalance_moves_a_workload_to_a_cheaper_offer_and_keeps_its_work(durable_workload, settings):
    workload = durable_workload
    key = api_key_for(workload)
    first = WorkloadInstance.objects.get(workload=workload)

    refused = key.post(f"/api/v1/workloads/{workload.id}/rebalance", data={}, format="json")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "no_cheaper_offer"

    target = make_cheaper(first)
    moved = key.post(f"/api/v1/workloads/{workload.id}/rebalance", data={"min_saving_pct": 20}, format="json")
    assert moved.status_code == 202, moved.content
    assert moved.json()["offer"]["instance_type"] == target.instance_type

    run_succeeds(workload, "migrate")
    second = WorkloadInstance.objects.exclude(id=first.id).get(workload=workload)
    assert (second.provider, second.region, second.availability_zone, second.instance_type) == target.pool
    saved = WorkloadEvent.objects.get(workload=workload, name="final-checkpoint").detail["checkpoint"]
    answer = progress_of(WorkloadRouting.objects.get(workload=workload).endpoint)
    assert answer["restored_progress"] >= checkpoint_progress(workload, saved) > 0


def api_key_for(workload) -> APIClient:
    from accounts.services import api_key_create

    _, raw_key = api_key_create(customer=workload.customer, name="test")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return client


@pytest.mark.parametrize(("body", "status"), [({"min_saving_pct": -1}, 400), ({"min_saving_pct": "lots"}, 400),
                                              ({"min_saving_pct": 101}, 400), ({"margin": 5}, 400)])  # fmt: skip
def test_rebalance_refuses_bad_input(db, body, status):
    workload = WorkloadFactory(status=S.RUNNING)
    response = api_key_for(workload).post(f"/api/v1/workloads/{workload.id}/rebalance", data=body, format="json")
    assert response.status_code == status
    assert response.json()["error"]["fields"]


def test_rebalance_of_a_workload_that_is_not_running_is_a_409_and_another_customers_is_a_404(db):
    pending = WorkloadFactory(status=S.PENDING)
    response = api_key_for(pending).post(f"/api/v1/workloads/{pending.id}/rebalance", data={}, format="json")
    assert response.status_code == 409 and response.json()["error"]["current_state"] == "PENDING"
    stranger = api_key_for(WorkloadFactory())
    assert stranger.post(f"/api/v1/workloads/{pending.id}/rebalance", data={}, format="json").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_an_unhealthy_workload_with_recovery_migrate_is_replaced(catalog, worker, local_cloud_clean, settings):
    settings.HEALTH_CHECK_TIMEOUT_SECONDS = 1
    _, key = customer_with_key()
    workload = submit(api_for(key))
    assert reaches(workload, S.RUNNING, S.FAILED) == S.RUNNING
    run_succeeds(workload, "provision")
    first = WorkloadInstance.objects.get(workload=workload)
    endpoint = WorkloadRouting.objects.get(workload=workload).endpoint
    urllib.request.urlopen(urllib.request.Request(f"http://{endpoint}/_agent/unhealthy", method="POST"), timeout=5)

    health_sweep_run()
    health_sweep_run()
    workload.refresh_from_db()
    assert workload.status == S.RUNNING  # two failures are not yet a verdict
    health_sweep_run()

    run_succeeds(workload, "migrate")
    workload.refresh_from_db()
    assert workload.status == S.RUNNING
    assert WorkloadEvent.objects.filter(workload=workload, name="health_check_fail").exists()
    second = WorkloadInstance.objects.exclude(id=first.id).get(workload=workload)
    assert get_json(f"http://{WorkloadRouting.objects.get(workload=workload).endpoint}/health")[0] == 200
    assert second.instance_id != first.instance_id
    assert not local_cloud_clean.process_alive(first.instance_id)
