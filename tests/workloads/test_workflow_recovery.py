"""A worker killed mid-step: the run resumes where it stopped and makes no second instance."""

import importlib
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest
from django_celery_beat.models import PeriodicTask

from billing.models import UsageRecord
from tests.factories import customer_with_key
from tests.live import wait_until
from tests.workloads.test_provision import api_for, reaches, submit
from workloads.models import StepStatus, WorkflowStep, WorkloadInstance, WorkloadStatus
from workloads.workflows.engine import workflow_resume_stalled

S = WorkloadStatus
pytestmark = pytest.mark.django_db(transaction=True)


def local_instances_of(local, workload) -> list:
    return [i for i in local.instances_all() if i.tags.get("workload-id") == str(workload.id)]


def step_running(workload, name: str, min_attempts: int = 1) -> bool:
    return WorkflowStep.objects.filter(
        run__workload=workload, name=name, status=StepStatus.RUNNING, attempts__gte=min_attempts
    ).exists()


def test_killed_inside_provision_cloud_resources(catalog, worker_factory, local_cloud_clean):
    # The cloud makes the instance, then the answer takes 60 s: the worker dies before it arrives.
    local_cloud_clean.faults_set(create_delay_seconds=60)
    first = worker_factory()
    _, key = customer_with_key()
    client = api_for(key)
    workload = submit(client)
    wait_until(lambda: step_running(workload, "provision-cloud-resources"), what="the create to start")
    wait_until(lambda: local_instances_of(local_cloud_clean, workload), what="the instance to exist")

    first.kill()
    local_cloud_clean.faults_clear()
    worker_factory()
    assert workflow_resume_stalled(stalled_for=timedelta(0))

    assert reaches(workload, S.RUNNING, S.FAILED) == S.RUNNING, workload.failure_reason
    [launched] = local_instances_of(local_cloud_clean, workload)
    instance = WorkloadInstance.objects.get(workload=workload)
    # The row came after the kill and the restart; the bill starts when the cloud launched the instance.
    assert instance.launched_at == launched.launched_at
    assert instance.launched_at < instance.created_at

    client.post(f"/api/v1/workloads/{workload.id}/terminate")
    assert reaches(workload, S.TERMINATED) == S.TERMINATED
    record = wait_until(lambda: UsageRecord.objects.filter(instance=instance).first(), what="the bill")
    instance.refresh_from_db()
    assert record.started_at == launched.launched_at
    assert record.duration_seconds == Decimal(
        str((instance.terminated_at - launched.launched_at).total_seconds())
    ).quantize(Decimal("0.001"), ROUND_HALF_UP)


def test_killed_inside_wait_for_instance(catalog, worker_factory, local_cloud_clean):
    slow_boot = {"LOCAL_CLOUD_BOOT_DELAY_MS": "6000"}
    first = worker_factory(env=slow_boot)
    _, key = customer_with_key()
    workload = submit(api_for(key))
    wait_until(lambda: step_running(workload, "wait-for-instance", min_attempts=2), what="the wait to be polling")

    first.kill()
    worker_factory(env=slow_boot)
    # A parked wait is not stalled until its own re-check was due (then nothing touched it).
    wait_until(lambda: workflow_resume_stalled(stalled_for=timedelta(0)), what="the run to count as stalled")

    assert reaches(workload, S.RUNNING, S.FAILED) == S.RUNNING, workload.failure_reason
    assert len(local_instances_of(local_cloud_clean, workload)) == 1
    assert WorkloadInstance.objects.filter(workload=workload).count() == 1


def test_beat_resumes_stalled_runs_on_a_schedule_operators_can_edit(transactional_db):
    # Transactional tests empty the tables, so re-apply the data migration's schedule here.
    from django.apps import apps

    schedule = importlib.import_module("workloads.migrations.0003_schedule_workflow_resume")
    schedule.create_schedule(apps, None)
    schedule.create_schedule(apps, None)  # idempotent

    task = PeriodicTask.objects.get(task="workloads.workflow_resume_stalled")
    assert task.enabled and task.interval.every == 30 and task.interval.period == "seconds"
