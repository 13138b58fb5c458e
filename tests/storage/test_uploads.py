"""Upload URLs keep their promises on both backends: single use, reserved from the quota, swept when they
expire, closed once the workload is terminated; the bytes held never exceed the quota and match the index."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from unittest import mock

import pytest
import requests
from django.conf import settings

from storage import tasks
from storage.models import UploadStatus, WorkloadStorageObject, WorkloadStorageUpload
from storage.services import UPLOAD_EXPIRY_GRACE, storage_schedule_cleanup
from tests.storage.conftest import (
    bytes_on_disk,
    send_bytes,
    storage_url,
    storage_workload,
    upload_complete,
    upload_target,
    url_path,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(params=["embedded", "s3"])
def backend(request):
    fixture = request.getfixturevalue(request.param)
    return fixture.backend if request.param == "s3" else fixture


def _storage(api, workload) -> dict:
    return api.get(f"/api/v1/workloads/{workload.id}").json()["storage"]


def _index_bytes(workload) -> int:
    return sum(WorkloadStorageObject.objects.filter(workload=workload).values_list("size_bytes", flat=True))


def _download(api, backend, workload, key: str) -> bytes:
    link = api.post(storage_url(workload.id, "downloads"), {"key": key}, format="json")
    assert link.status_code == 200, link.json()
    url = link.json()["url"]
    if url.startswith(settings.PUBLIC_API_URL):
        return b"".join(api.get(url_path(url)).streaming_content)
    return requests.get(url, timeout=30).content


def _sweep_after(workload) -> int:
    """The beat task, run as if every URL issued so far had expired (and its grace passed)."""
    latest = max(WorkloadStorageUpload.objects.filter(workload=workload).values_list("expires_at", flat=True))
    with mock.patch("django.utils.timezone.now", return_value=latest + UPLOAD_EXPIRY_GRACE + timedelta(seconds=1)):
        return tasks.expire_objects.apply().get()


def test_an_upload_url_is_single_use(api, workload, backend):
    key = f"workloads/{workload.id}/state/config.json"
    target = upload_target(api, workload, "state/config.json", size_bytes=1)
    assert send_bytes(api, target, b"1").status_code in (200, 204)
    assert upload_complete(api, workload, "state/config.json", b"1").status_code == 201

    replay = send_bytes(api, target, b"x" * 5000)
    if target["method"] == "PUT":  # the embedded URL itself refuses a second body
        assert replay.status_code == 409
        assert replay.json()["error"]["code"] == "upload_url_used"
    again = upload_complete(api, workload, "state/config.json")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "upload_not_pending"

    # Whatever the replay sent is gone; the object is still the one indexed.
    assert sorted(backend.list_keys(f"workloads/{workload.id}/")) == [key]
    assert _download(api, backend, workload, "state/config.json") == b"1"
    stored = WorkloadStorageObject.objects.get(workload=workload, object_key="state/config.json")
    assert (stored.size_bytes, stored.checksum) == (1, hashlib.sha256(b"1").hexdigest())


def test_a_second_put_before_completion_is_refused_and_writes_nothing(api, workload, embedded):
    target = upload_target(api, workload, "state/a.bin", size_bytes=10)
    assert send_bytes(api, target, b"first").status_code == 200
    second = send_bytes(api, target, b"second")
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "upload_url_used"
    assert upload_complete(api, workload, "state/a.bin", b"first").status_code == 201
    assert embedded.read(f"workloads/{workload.id}/state/a.bin") == b"first"


def test_completion_without_an_upload_url_is_refused(api, workload, backend):
    key = f"workloads/{workload.id}/state/a.bin"
    backend.write(key, b"bytes no URL was issued for", content_type="application/octet-stream")
    refused = upload_complete(api, workload, "state/a.bin")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "upload_not_pending"
    assert not WorkloadStorageObject.objects.filter(workload=workload).exists()


def test_a_url_reserves_its_bytes_until_the_upload_completes(api, customer, backend):
    workload = storage_workload(customer, quota_bytes=100)
    target = upload_target(api, workload, "artifacts/a.bin", size_bytes=60)
    assert target["max_bytes"] == 60
    assert (_storage(api, workload)["used_bytes"], _storage(api, workload)["reserved_bytes"]) == (0, 60)

    over = api.post(storage_url(workload.id, "uploads"), {"key": "artifacts/b.bin", "size_bytes": 50}, format="json")
    assert over.status_code == 413
    assert over.json()["error"] == {
        "status": 413,
        "code": "quota_exceeded",
        "message": "Storage quota exceeded",
        "quota_bytes": 100,
        "used_bytes": 0,
        "reserved_bytes": 60,
    }
    begin = api.post(
        storage_url(workload.id, "checkpoints"), {"chunks": [{"size_bytes": 50, "sha256": "0" * 64}]}, format="json"
    )
    assert begin.status_code == 413

    # Completed with fewer bytes than reserved: the object counts, the reservation is released.
    assert send_bytes(api, target, b"a" * 25).status_code in (200, 204)
    assert upload_complete(api, workload, "artifacts/a.bin", b"a" * 25).status_code == 201
    assert (_storage(api, workload)["used_bytes"], _storage(api, workload)["reserved_bytes"]) == (25, 0)
    assert upload_target(api, workload, "artifacts/b.bin", size_bytes=75)["max_bytes"] == 75


def test_an_upload_over_its_reservation_is_refused_and_removed(api, customer, backend):
    workload = storage_workload(customer, quota_bytes=100)
    upload_target(api, workload, "artifacts/a.bin", size_bytes=10)
    staging = WorkloadStorageUpload.objects.get(workload=workload).staging_key
    backend.write(staging, b"z" * 50, content_type="application/octet-stream")  # as if the cap were bypassed
    refused = upload_complete(api, workload, "artifacts/a.bin")
    assert refused.status_code == 413
    assert refused.json()["error"]["code"] == "quota_exceeded"
    assert list(backend.list_keys(f"workloads/{workload.id}/")) == []
    assert WorkloadStorageUpload.objects.get(workload=workload).status == UploadStatus.REFUSED
    assert _storage(api, workload)["reserved_bytes"] == 0


def test_expired_pending_uploads_are_swept_with_their_bytes(api, customer, backend):
    workload = storage_workload(customer, quota_bytes=100)
    sent = upload_target(api, workload, "artifacts/sent.bin", size_bytes=40)  # bytes sent, never completed
    assert send_bytes(api, sent, b"s" * 40).status_code in (200, 204)
    unused = upload_target(api, workload, "artifacts/unused.bin", size_bytes=30)  # never used
    kept = upload_target(api, workload, "state/kept.bin", size_bytes=5)
    assert send_bytes(api, kept, b"kkkkk").status_code in (200, 204)
    assert upload_complete(api, workload, "state/kept.bin", b"kkkkk").status_code == 201
    assert bytes_on_disk(backend, workload) == 45
    assert _storage(api, workload)["reserved_bytes"] == 70

    # Before the URLs expire, the sweep leaves them alone.
    assert tasks.expire_objects.apply().get() == 0
    assert WorkloadStorageUpload.objects.filter(workload=workload).count() == 3

    assert _sweep_after(workload) == 3
    assert not WorkloadStorageUpload.objects.filter(workload=workload).exists()
    assert list(backend.list_keys(f"workloads/{workload.id}/")) == [f"workloads/{workload.id}/state/kept.bin"]
    assert bytes_on_disk(backend, workload) == _index_bytes(workload) == 5
    assert _storage(api, workload)["reserved_bytes"] == 0

    # A swept URL takes nothing more: the embedded PUT is refused, a completion finds no upload.
    if unused["method"] == "PUT":
        late = send_bytes(api, unused, b"late")
        assert late.status_code == 403
        assert late.json()["error"]["code"] == "upload_expired"
    assert upload_complete(api, workload, "artifacts/sent.bin").status_code == 409
    assert bytes_on_disk(backend, workload) == 5


def test_a_pending_multipart_upload_is_aborted_by_the_sweep(api, customer, s3, settings):
    settings.STORAGE_MULTIPART_THRESHOLD_BYTES = 5 * 1024**2
    settings.STORAGE_MULTIPART_PART_BYTES = 5 * 1024**2
    workload = storage_workload(customer, quota_bytes=100 * 1024**2)
    target = upload_target(api, workload, "artifacts/big.bin", size_bytes=6 * 1024**2)
    assert target["method"] == "MULTIPART"
    assert requests.put(target["parts"][0]["url"], data=b"p" * 5 * 1024**2, timeout=30).status_code == 200
    assert s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads")

    assert _sweep_after(workload) == 1
    assert not s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads")
    assert s3.keys() == []
    assert _storage(api, workload)["reserved_bytes"] == 0


def test_terminated_storage_takes_no_writes_even_on_urls_issued_before(api, workload, backend):
    sent = upload_target(api, workload, "artifacts/sent.bin", size_bytes=4)
    assert send_bytes(api, sent, b"sent").status_code in (200, 204)
    later = upload_target(api, workload, "artifacts/later.bin", size_bytes=5)
    chunk = b"chunk"
    begun = api.post(
        storage_url(workload.id, "checkpoints"),
        {"chunks": [{"size_bytes": len(chunk), "sha256": hashlib.sha256(chunk).hexdigest()}]},
        format="json",
    ).json()
    assert send_bytes(api, begun["chunks"][0]["upload"], chunk).status_code in (200, 204)

    storage_schedule_cleanup(workload_id=workload.id)  # the termination workflow's step

    late = send_bytes(api, later, b"later")
    if later["method"] == "PUT":  # the embedded URL refuses the body
        assert late.status_code == 409
        assert late.json()["error"]["code"] == "storage_read_only"
    for key in ("artifacts/sent.bin", "artifacts/later.bin"):
        refused = upload_complete(api, workload, key)
        assert refused.status_code == 409, key
        assert refused.json()["error"]["code"] == "storage_read_only"
    refused = api.post(storage_url(workload.id, f"checkpoints/{begun['checkpoint_id']}/complete"))
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "storage_read_only"
    new = api.post(storage_url(workload.id, "uploads"), {"key": "state/x"}, format="json")
    assert new.status_code == 409
    assert new.json()["error"]["code"] == "storage_read_only"

    # Nothing any of them sent stays.
    assert list(backend.list_keys(f"workloads/{workload.id}/")) == []
    assert not WorkloadStorageObject.objects.filter(workload=workload).exists()
    assert _storage(api, workload)["reserved_bytes"] == 0


def test_bytes_held_stay_within_the_quota_and_match_the_index_once_settled(api, customer, backend):
    quota = 2000  # room for a checkpoint's manifest too
    workload = storage_workload(customer, quota_bytes=quota)

    def check() -> None:
        assert bytes_on_disk(backend, workload) <= quota

    done = upload_target(api, workload, "state/a.bin", size_bytes=50)
    send_bytes(api, done, b"a" * 50)
    check()
    assert upload_complete(api, workload, "state/a.bin", b"a" * 50).status_code == 201
    send_bytes(api, done, b"A" * 50)  # a replay
    check()
    abandoned = upload_target(api, workload, "artifacts/b.bin")  # all the room left, never completed
    assert abandoned["max_bytes"] == quota - 50
    send_bytes(api, abandoned, b"b" * 100)
    check()
    assert api.post(storage_url(workload.id, "uploads"), {"key": "state/c"}, format="json").status_code == 413

    _sweep_after(workload)  # the abandoned URL expires: its reservation and bytes go
    assert bytes_on_disk(backend, workload) == _index_bytes(workload) == 50

    # A checkpoint through the same upload URLs: its chunks and manifest are reserved and then indexed.
    chunks = [b"c" * 40, b"d" * 30]
    begun = api.post(
        storage_url(workload.id, "checkpoints"),
        {"chunks": [{"size_bytes": len(c), "sha256": hashlib.sha256(c).hexdigest()} for c in chunks]},
        format="json",
    )
    assert begun.status_code == 201, begun.json()
    reserved = _storage(api, workload)["reserved_bytes"]
    assert reserved > 70  # the chunks and the manifest to come
    for chunk, entry in zip(chunks, begun.json()["chunks"], strict=True):
        assert send_bytes(api, entry["upload"], chunk).status_code in (200, 204)
        check()
    completed = api.post(storage_url(workload.id, f"checkpoints/{begun.json()['checkpoint_id']}/complete"))
    assert completed.status_code == 200, completed.json()
    assert completed.json()["status"] == "COMPLETE"
    assert _storage(api, workload)["reserved_bytes"] == 0
    assert _storage(api, workload)["used_bytes"] == 50 + reserved
    check()

    _sweep_after(workload)
    assert bytes_on_disk(backend, workload) == _index_bytes(workload) == 50 + reserved
    assert _download(api, backend, workload, "state/a.bin") == b"a" * 50


def test_upload_target_is_described_in_the_openapi_schema(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    answer = schema["paths"]["/api/v1/workloads/{workload_id}/storage/uploads"]["post"]["responses"]["201"]
    assert answer["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/UploadTarget"
    target = schema["components"]["schemas"]["UploadTarget"]["properties"]
    assert {"key", "method", "url", "fields", "headers", "max_bytes", "upload_id", "parts", "expires_at"} <= set(target)
    assert "`fields`" in target["method"]["description"]


@pytest.mark.django_db(transaction=True)
def test_a_put_without_content_length_is_a_411_and_writes_nothing(customer, embedded, live_server, settings):
    settings.PUBLIC_API_URL = live_server.url
    workload = storage_workload(customer)
    from rest_framework.test import APIClient

    from accounts.tokens import agent_token_for

    agent = APIClient()
    agent.credentials(HTTP_AUTHORIZATION=f"Bearer {agent_token_for(workload.id)}")
    target = upload_target(agent, workload, "state/a.bin", size_bytes=100)

    chunked = requests.put(target["url"], data=iter([b"abc", b"def"]), timeout=30)  # Transfer-Encoding: chunked
    assert chunked.status_code == 411
    assert chunked.json()["error"]["code"] == "length_required"
    assert "Content-Length" in chunked.json()["error"]["message"]
    assert list(embedded.list_keys(f"workloads/{workload.id}/")) == []

    # The URL is still unused: the same bytes with a Content-Length go through.
    assert requests.put(target["url"], data=b"abcdef", timeout=30).status_code == 200
    assert upload_complete(agent, workload, "state/a.bin", b"abcdef").status_code == 201


def test_operators_see_the_open_upload_urls_in_the_admin(api, workload, embedded, admin_client):
    upload_target(api, workload, "artifacts/report.pdf", size_bytes=1234)
    page = admin_client.get("/admin/storage/workloadstorageupload/")
    assert page.status_code == 200
    body = page.content.decode()
    assert "artifacts/report.pdf" in body
    assert "1234" in body
    assert admin_client.get("/admin/storage/workloadstorageupload/add/").status_code == 403
