"""Storage fixtures: a real S3 API server (moto's server mode on loopback) and the embedded backend."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from django.test import override_settings

from accounts.tokens import agent_token_for
from storage.backends import S3Backend, storage_backend
from storage.services import storage_initialize
from tests.factories import WorkloadFactory
from workloads.models import WorkloadStatus

_buckets = itertools.count(1)
logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the S3 server logs every request


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@dataclass
class S3:
    backend: S3Backend
    bucket: str
    calls: dict[str, int] = field(default_factory=dict)

    @property
    def client(self):
        return self.backend.client

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(self.backend.list_keys(prefix))


@pytest.fixture
def s3(s3_server) -> Iterator[S3]:
    """Settings pointed at a fresh bucket on the S3 server; counts the S3 API calls made through our client."""
    bucket = f"workload-storage-{next(_buckets)}"
    with override_settings(
        STORAGE_BUCKET=bucket,
        STORAGE_ENDPOINT_URL=s3_server,
        STORAGE_REGION="us-east-1",
        STORAGE_ACCESS_KEY_ID="test-key",
        STORAGE_SECRET_ACCESS_KEY="test-secret",
        STORAGE_ADDRESSING_STYLE="path",
        STORAGE_PRESIGNED_POST=True,
    ):
        backend = storage_backend()
        backend.client.create_bucket(Bucket=bucket)
        state = S3(backend=backend, bucket=bucket)

        def count(event_name: str, **kwargs) -> None:
            operation = event_name.rsplit(".", 1)[-1]
            state.calls[operation] = state.calls.get(operation, 0) + 1

        backend.client.meta.events.register("before-call.s3", count)
        yield state
        backend.client.meta.events.unregister("before-call.s3", count)


@pytest.fixture
def embedded(tmp_path):
    """The embedded backend: the filesystem under a fresh MEDIA_ROOT."""
    with override_settings(STORAGE_BUCKET="", MEDIA_ROOT=tmp_path / "media"):
        yield storage_backend()


def storage_workload(customer, *, quota_bytes: int = 10 * 1024**2, retention_days: int = 7, **kwargs):
    workload = WorkloadFactory(customer=customer, status=kwargs.pop("status", WorkloadStatus.RUNNING), **kwargs)
    storage_initialize(workload_id=workload.id, quota_bytes=quota_bytes, retention_days=retention_days)
    return workload


@pytest.fixture
def workload(customer):
    return storage_workload(customer)


@pytest.fixture
def agent_api(workload):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {agent_token_for(workload.id)}")
    return client


def storage_url(workload_id, path: str) -> str:
    return f"/api/v1/workloads/{workload_id}/storage/{path}"


def url_path(url: str) -> str:
    """An embedded signed URL as the test client's path and query."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def upload_target(api, workload, key: str, **body) -> dict:
    answer = api.post(storage_url(workload.id, "uploads"), {"key": key, **body}, format="json")
    assert answer.status_code == 201, answer.json()
    return answer.json()


def send_bytes(api, target: dict, data: bytes):
    """Send ``data`` as the upload target says: the embedded PUT through the test client, S3 over HTTP."""
    import requests
    from django.conf import settings

    if target["url"].startswith(settings.PUBLIC_API_URL):
        return api.put(url_path(target["url"]), data, content_type="application/octet-stream")
    if target["method"] == "POST":
        return requests.post(target["url"], data=target["fields"], files={"file": ("blob", data)}, timeout=30)
    return requests.put(target["url"], data=data, headers=target["headers"], timeout=30)


def upload_complete(api, workload, key: str, data: bytes | None = None, **body):
    import hashlib

    if data is not None:
        body["sha256"] = hashlib.sha256(data).hexdigest()
    return api.post(storage_url(workload.id, "uploads/complete"), {"key": key, **body}, format="json")


def bytes_on_disk(backend, workload) -> int:
    """Every byte the backend holds for the workload: objects, staging uploads, anything else."""
    return sum(backend.stat(key).size for key in backend.list_keys(f"workloads/{workload.id}/"))
