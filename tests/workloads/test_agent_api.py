"""The agent API and the storage API as a workload's agent token sees them over the workload's life.

While the workload lives its token reads and writes; once it is terminated the token only
lists and downloads its storage until the retention ends; after that it is a 401.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.tokens import agent_token_for
from storage.models import WorkloadStorageConfig, WorkloadStorageObject
from tests.factories import WorkloadFactory
from tests.storage.conftest import embedded, storage_url, storage_workload  # noqa: F401 (embedded: a fixture)
from tests.storage.test_embedded import _path
from tests.storage.test_retention import _store, _terminate_in_process
from workloads.models import WorkloadEvent, WorkloadStatus

pytestmark = pytest.mark.django_db

S = WorkloadStatus
SHA = "0" * 64
CHECKPOINT_ID = "20260101T000000000000Z"


def agent_for(workload) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {agent_token_for(workload.id)}")
    return client


def reads(agent: APIClient, workload) -> list:
    return [
        agent.get(storage_url(workload.id, "objects")),
        agent.post(storage_url(workload.id, "downloads"), {"key": "state/config.json"}, format="json"),
        agent.get(storage_url(workload.id, "checkpoints")),
    ]


def writes(agent: APIClient, workload) -> list:
    def storage(path: str, body: dict | None = None):
        return agent.post(storage_url(workload.id, path), body, format="json")

    return [
        storage("uploads", {"key": "state/next.json"}),
        storage("uploads/complete", {"key": "state/next.json", "sha256": SHA}),
        storage("checkpoints", {"chunks": [{"size_bytes": 1, "sha256": SHA}]}),
        storage(f"checkpoints/{CHECKPOINT_ID}/complete"),
        agent.post("/api/v1/agent/interruption", {"reason": "notice"}, format="json"),
        agent.post("/api/v1/agent/progress", {"completed_seconds": 5}, format="json"),
    ]


def test_a_terminated_workloads_token_only_reads_until_the_retention_ends(
    customer,
    embedded,  # noqa: F811 (the fixture imported above)
    django_capture_on_commit_callbacks,
):
    workload = storage_workload(customer, retention_days=7)
    _store(workload, embedded, ["state/config.json"])
    agent = agent_for(workload)
    assert agent.post(storage_url(workload.id, "uploads"), {"key": "state/x"}, format="json").status_code == 201

    with django_capture_on_commit_callbacks(execute=True):
        _terminate_in_process(workload.id)
    workload.refresh_from_db()
    assert workload.status == S.TERMINATED
    events = WorkloadEvent.objects.filter(workload=workload).count()
    retention_ends_at = WorkloadStorageConfig.objects.get(workload=workload).read_only_since + timedelta(days=7)

    # Reading: the objects, a download of one (and its bytes), the checkpoints.
    listed, link, checkpoints = reads(agent, workload)
    assert listed.status_code == 200 and [o["key"] for o in listed.json()["results"]] == ["state/config.json"]
    assert link.status_code == 200, link.json()
    served = agent.get(_path(link.json()["url"]))
    assert served.status_code == 200 and b"".join(served.streaming_content) == b"data-state/config.json"
    assert checkpoints.status_code == 200
    latest = agent.get(storage_url(workload.id, "checkpoints/latest"))
    assert latest.status_code == 404 and latest.json()["error"]["code"] == "no_checkpoint"

    # Writing and reporting: refused, and nothing changes.
    for answer in writes(agent, workload):
        assert answer.status_code == 403, (answer.request["PATH_INFO"], answer.json())
        error = answer.json()["error"]
        assert error["code"] == "agent_token_read_only"
        assert error["read_only_until"] == retention_ends_at.isoformat()
        assert "terminated" in error["message"]
    workload.refresh_from_db()
    assert workload.status == S.TERMINATED
    assert WorkloadEvent.objects.filter(workload=workload).count() == events
    assert list(WorkloadStorageObject.objects.filter(workload=workload).values_list("object_key", flat=True)) == [
        "state/config.json"
    ]

    # Once the retention is over the token is dead, for reads too.
    WorkloadStorageConfig.objects.filter(workload=workload).update(
        read_only_since=timezone.now() - timedelta(days=7, seconds=1)
    )
    for answer in reads(agent, workload) + writes(agent, workload):
        assert answer.status_code == 401, (answer.request["PATH_INFO"], answer.json())
        assert answer.json()["error"]["code"] == "agent_token_expired"


def test_a_terminated_workload_without_storage_has_a_dead_token_at_once(db):
    workload = WorkloadFactory(status=S.TERMINATED)
    agent = agent_for(workload)
    for answer in (
        agent.post("/api/v1/agent/interruption", {"reason": "notice"}, format="json"),
        agent.post("/api/v1/agent/progress", {"completed_seconds": 5}, format="json"),
        agent.get(storage_url(workload.id, "objects")),
    ):
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "agent_token_expired"


def test_the_token_of_a_workload_that_does_not_exist_is_refused(db):
    agent = APIClient()
    agent.credentials(HTTP_AUTHORIZATION=f"Bearer {agent_token_for(uuid.uuid4())}")
    answer = agent.post("/api/v1/agent/progress", {"completed_seconds": 5}, format="json")
    assert answer.status_code == 401


@pytest.mark.parametrize("status", [S.RUNNING, S.STOPPING, S.FAILED])
def test_until_the_workload_is_terminated_its_token_still_writes(customer, embedded, status):  # noqa: F811
    workload = storage_workload(customer, status=status)
    agent = agent_for(workload)
    assert agent.post(storage_url(workload.id, "uploads"), {"key": "state/x"}, format="json").status_code == 201
    assert agent.post("/api/v1/agent/progress", {"completed_seconds": 5}, format="json").status_code == 202
