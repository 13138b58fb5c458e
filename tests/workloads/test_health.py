"""Health checks: concurrent, bounded, and the sweep's verdicts."""

import time
from decimal import Decimal

import pytest

from placement.clouds.base import InstanceRequest
from tests.factories import WorkloadFactory
from tests.live import HealthServer
from workloads.health import check_many
from workloads.models import HealthMonitor, WorkflowRun, WorkloadStatus
from workloads.recovery import health_sweep_run

S = WorkloadStatus


@pytest.fixture
def upstream():
    """A server whose /health answer is set per test: "ok" (200), "error" (500), or "hang"."""
    server = HealthServer()
    yield server
    server.close()


def test_checks_report_ok_errors_timeouts_and_refusals(upstream):
    ok = check_many([upstream.address], timeout=2, concurrency=10)[0]
    upstream.mode = "error"
    error = check_many([upstream.address], timeout=2, concurrency=10)[0]
    upstream.mode = "hang"
    hung = check_many([upstream.address], timeout=0.3, concurrency=10)[0]
    refused = check_many(["127.0.0.1:9"], timeout=1, concurrency=10)[0]

    assert ok.ok and not error.ok and error.error == "HTTP 500"
    assert not hung.ok and hung.error == "timed out"
    assert not refused.ok


def test_checks_overlap_instead_of_running_one_after_another(upstream):
    upstream.mode = "hang"
    started = time.monotonic()
    results = check_many([upstream.address] * 40, timeout=0.5, concurrency=40)
    assert all(not result.ok for result in results)
    assert time.monotonic() - started < 5  # 40 one after another would take 20 s


@pytest.fixture
def monitored(db, upstream, local_cloud_clean):
    """A RUNNING workload whose instance lives in the local cloud and whose health is ``upstream``."""

    def make(recovery_policy="terminate"):
        workload = WorkloadFactory(status=S.RUNNING, recovery_policy=recovery_policy)
        instance = local_cloud_clean.LocalCloud("aws").create_spot_instance(
            InstanceRequest(
                idempotency_token=f"health-{workload.id}", region="us-east-1", availability_zone="us-east-1a",
                instance_type="m7i.large", max_price_per_hour=Decimal("1"), tags={},
            )
        )  # fmt: skip
        HealthMonitor.objects.create(
            workload=workload, instance_id=instance.instance_id, provider="aws", region="us-east-1",
            endpoint=upstream.address,
        )  # fmt: skip
        return workload

    return make


def sweep(settings):
    settings.HEALTH_CHECK_TIMEOUT_SECONDS = 1
    return health_sweep_run()


def test_three_failed_sweeps_make_a_workload_unhealthy_and_start_its_recovery(
    monitored, upstream, settings, local_cloud_clean, django_capture_on_commit_callbacks
):
    workload = monitored("terminate")
    upstream.mode = "error"
    with django_capture_on_commit_callbacks(execute=False):
        sweep(settings)
        sweep(settings)
        workload.refresh_from_db()
        assert workload.status == S.RUNNING
        report = sweep(settings)
    workload.refresh_from_db()
    assert workload.status == S.UNHEALTHY
    assert report.unhealthy == 1
    assert WorkflowRun.objects.get(workload=workload).kind == "terminate"


def test_with_recovery_migrate_an_unhealthy_workload_is_migrated(
    monitored, upstream, settings, local_cloud_clean, django_capture_on_commit_callbacks
):
    workload = monitored("migrate")
    upstream.mode = "error"
    with django_capture_on_commit_callbacks(execute=False):
        for _ in range(3):
            sweep(settings)
    run = WorkflowRun.objects.get(workload=workload)
    assert run.kind == "migrate"
    assert run.steps.order_by("position").first().name == "wait-for-final-checkpoint"


def test_a_workload_that_fails_once_and_recovers_stays_running(monitored, upstream, settings, local_cloud_clean):
    workload = monitored()
    upstream.mode = "error"
    sweep(settings)
    upstream.mode = "ok"
    sweep(settings)
    monitor = HealthMonitor.objects.get(workload=workload)
    workload.refresh_from_db()
    assert workload.status == S.RUNNING
    assert monitor.consecutive_failures == 0 and monitor.last_ok_at is not None
