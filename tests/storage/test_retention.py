"""Retention: termination marks every object, the beat task expires them from the backend and the index."""

from __future__ import annotations

from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from storage import tasks
from storage.keys import full_key
from storage.models import WorkloadCheckpoint, WorkloadStorageObject
from storage.services import NewObject, WorkloadStorageManager, storage_expired_delete
from tests.storage.conftest import storage_workload
from workloads.models import WorkflowKind, WorkflowRun, WorkloadEvent, WorkloadStatus
from workloads.services import workload_terminate
from workloads.workflows import engine

pytestmark = pytest.mark.django_db


def _terminate_in_process(workload_id) -> None:
    """The termination workflow's steps, run here one after the other as the worker would."""
    workload_terminate(workload_id=workload_id)
    run = WorkflowRun.objects.get(workload_id=workload_id, kind=WorkflowKind.TERMINATE)
    for step in run.steps.order_by("position"):
        outcome = engine.workflow_step_execute(run_id=run.id, step_name=step.name, generation=run.chain_generation)
        assert isinstance(outcome, engine.Done), (step.name, outcome)


def _store(workload, backend, keys: list[str]) -> None:
    for key in keys:
        backend.write(full_key(workload.id, key), b"data-" + key.encode(), content_type="application/octet-stream")
    WorkloadStorageManager(workload.id, backend=backend).record_objects(
        [NewObject(key, len(b"data-" + key.encode()), "", "") for key in keys]
    )


@pytest.mark.parametrize("backend_name", ["embedded", "s3"])
def test_terminate_then_expire_leaves_nothing(request, customer, backend_name, django_capture_on_commit_callbacks):
    backend = request.getfixturevalue(backend_name)
    backend = getattr(backend, "backend", backend)
    workload = storage_workload(customer, retention_days=7)
    other = storage_workload(customer, retention_days=7)
    keys = ["state/config.json", "artifacts/logs/app.log", "checkpoints/20260101T000000000000Z/data/chunk-001.bin"]
    _store(workload, backend, keys)
    _store(other, backend, ["state/config.json"])
    WorkloadCheckpoint.objects.create(
        workload=workload, checkpoint_id="20260101T000000000000Z", manifest={"chunks": []}, status="COMPLETE"
    )
    # An object already given an expiry keeps it.
    marked_at = timezone.now() + timedelta(days=1)
    WorkloadStorageObject.objects.filter(workload=workload, object_key="artifacts/logs/app.log").update(
        expires_at=marked_at
    )

    with django_capture_on_commit_callbacks(execute=True):
        _terminate_in_process(workload.id)

    workload.refresh_from_db()
    assert workload.status == WorkloadStatus.TERMINATED
    event = WorkloadEvent.objects.get(workload=workload, name="STORAGE_CLEANUP_SCHEDULED")
    expires = {o.object_key: o.expires_at for o in WorkloadStorageObject.objects.filter(workload=workload)}
    assert expires["artifacts/logs/app.log"] == marked_at
    retained_until = expires["state/config.json"]
    assert event.detail["expiresAt"] == retained_until.isoformat()
    assert timedelta(days=6, hours=23) < retained_until - timezone.now() <= timedelta(days=7)

    # Before the retention ends, the task deletes nothing of it.
    assert tasks.expire_objects.apply().get() == 0
    assert WorkloadStorageObject.objects.filter(workload=workload).count() == 3

    with mock.patch("django.utils.timezone.now", return_value=retained_until + timedelta(seconds=1)):
        assert tasks.expire_objects.apply().get() == 3

    assert list(backend.list_keys(f"workloads/{workload.id}/")) == []
    assert not WorkloadStorageObject.objects.filter(workload=workload).exists()
    # The other workload is untouched.
    assert list(backend.list_keys(f"workloads/{other.id}/")) == [full_key(other.id, "state/config.json")]
    assert WorkloadStorageObject.objects.filter(workload=other).count() == 1


def test_a_backend_failure_keeps_the_index_rows(customer, embedded):
    workload = storage_workload(customer)
    _store(workload, embedded, ["state/a", "state/b"])
    WorkloadStorageObject.objects.filter(workload=workload).update(expires_at=timezone.now() - timedelta(seconds=1))
    only_a = full_key(workload.id, "state/a")

    def delete_only_a(keys):  # the backend refuses (DeleteObjects "Errors") every key but one
        embedded.delete(only_a)
        return {only_a} & set(keys)

    with mock.patch.object(embedded, "delete_many", delete_only_a):
        assert storage_expired_delete(backend=embedded) == 1
    assert [o.object_key for o in WorkloadStorageObject.objects.filter(workload=workload)] == ["state/b"]
    assert embedded.stat(full_key(workload.id, "state/b")) is not None


def test_the_expiry_schedule_is_in_beat_and_editable():
    task = PeriodicTask.objects.get(name="Expire storage objects")
    assert task.task == "storage.expire_objects"
    assert task.enabled
    assert task.interval.every == 10
