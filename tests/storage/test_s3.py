"""Against a real S3 API server (moto's server mode on loopback): real HTTP bytes through presigned URLs."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import requests
from django.utils import timezone

from storage import kv as storage_kv
from storage.models import WorkloadStorageObject
from storage.services import storage_expired_delete
from tests.storage.conftest import send_bytes, storage_url, storage_workload, upload_complete, upload_target

pytestmark = pytest.mark.django_db


def _upload(api, workload, key: str, data: bytes, **body) -> dict:
    target = upload_target(api, workload, key, **body)
    sent = send_bytes(api, target, data)
    assert sent.status_code in (200, 204), sent.text
    return target


_complete = upload_complete


def _download(api, workload, key: str) -> bytes:
    link = api.post(storage_url(workload.id, "downloads"), {"key": key}, format="json")
    assert link.status_code == 200, link.json()
    got = requests.get(link.json()["url"], timeout=30)
    assert got.status_code == 200
    return got.content


def test_presigned_post_upload_and_get(api, workload, s3):
    data = b"state bytes " * 100
    target = _upload(api, workload, "state/session.dat", data)
    assert target["method"] == "POST"
    assert ["content-length-range", 0, 10 * 1024**2] in _policy_conditions(target)
    assert _complete(api, workload, "state/session.dat", data).status_code == 201
    assert _download(api, workload, "state/session.dat") == data
    assert s3.keys() == [f"workloads/{workload.id}/state/session.dat"]


def _policy_conditions(target: dict) -> list:
    import base64
    import json

    return json.loads(base64.b64decode(target["fields"]["policy"]))["conditions"]


def test_presigned_put_when_post_is_off(api, workload, s3, settings):
    settings.STORAGE_PRESIGNED_POST = False  # e.g. Cloudflare R2
    data = b"x,y\n1,2\n"
    target = _upload(api, workload, "artifacts/results/output-001.csv", data, content_type="text/csv")
    assert target["method"] == "PUT"
    stored = _complete(api, workload, "artifacts/results/output-001.csv", data)
    assert stored.status_code == 201
    assert stored.json()["checksum"] == hashlib.sha256(data).hexdigest()
    assert _download(api, workload, "artifacts/results/output-001.csv") == data


def test_multipart_upload_for_a_large_object(api, customer, s3, settings):
    settings.STORAGE_MULTIPART_THRESHOLD_BYTES = 5 * 1024**2
    settings.STORAGE_MULTIPART_PART_BYTES = 5 * 1024**2
    workload = storage_workload(customer, quota_bytes=100 * 1024**2)
    data = bytes(range(256)) * (11 * 1024**2 // 256)  # 11 MiB: three parts
    target = api.post(
        storage_url(workload.id, "uploads"), {"key": "artifacts/big.bin", "size_bytes": len(data)}, format="json"
    ).json()
    assert target["method"] == "MULTIPART"
    assert [p["part_number"] for p in target["parts"]] == [1, 2, 3]
    parts = []
    for part in target["parts"]:
        piece = data[part["offset"] : part["offset"] + part["size"]]
        sent = requests.put(part["url"], data=piece, timeout=30)
        assert sent.status_code == 200
        parts.append({"part_number": part["part_number"], "etag": sent.headers["ETag"]})
    done = _complete(
        api, workload, "artifacts/big.bin", data, size_bytes=len(data), upload_id=target["upload_id"], parts=parts
    )
    assert done.status_code == 201, done.json()
    assert done.json()["size_bytes"] == len(data)
    assert _download(api, workload, "artifacts/big.bin") == data


def test_usage_accounting_follows_the_index(api, workload, s3, django_capture_on_commit_callbacks):
    used_key = storage_kv.storage_keys(workload.id)["used"]
    with django_capture_on_commit_callbacks(execute=True):
        for key, size in (("state/a", 100), ("state/b", 250), ("artifacts/c", 50)):
            _upload(api, workload, key, b"z" * size)
            assert _complete(api, workload, key).status_code == 201
        # An overwrite replaces the old size.
        _upload(api, workload, "state/b", b"z" * 10)
        assert _complete(api, workload, "state/b").status_code == 201
    assert storage_kv.kv_get(used_key) == "160"
    detail = api.get(f"/api/v1/workloads/{workload.id}").json()["storage"]
    assert detail["used_bytes"] == 160
    assert detail["object_count"] == 3
    listing = api.get(storage_url(workload.id, "objects")).json()
    assert [(o["key"], o["size_bytes"], o["expires_at"]) for o in listing["results"]] == [
        ("artifacts/c", 50, None),
        ("state/a", 100, None),
        ("state/b", 10, None),
    ]


def test_quota_refuses_and_removes_the_upload_that_would_overflow(api, customer, s3):
    workload = storage_workload(customer, quota_bytes=100)
    _upload(api, workload, "state/first", b"a" * 60)
    assert _complete(api, workload, "state/first").status_code == 201

    target = _upload(api, workload, "state/second", b"b" * 60)  # the server ignores the policy's length range
    assert ["content-length-range", 0, 40] in _policy_conditions(target)
    refused = _complete(api, workload, "state/second")
    assert refused.status_code == 413
    assert refused.json()["error"]["code"] == "quota_exceeded"
    assert s3.keys() == [f"workloads/{workload.id}/state/first"]
    assert api.get(f"/api/v1/workloads/{workload.id}").json()["storage"]["used_bytes"] == 60

    _upload(api, workload, "state/second", b"b" * 40)
    assert _complete(api, workload, "state/second").status_code == 201
    full = api.post(storage_url(workload.id, "uploads"), {"key": "state/third"}, format="json")
    assert full.status_code == 413
    assert full.json()["error"]["message"] == "Storage quota exceeded"


def test_batch_expiry_of_2500_objects_takes_3_delete_objects_calls(customer, s3):
    workload = storage_workload(customer)
    keys = [f"artifacts/logs/{i:05d}.log" for i in range(2500)]
    with ThreadPoolExecutor(16) as pool:
        list(
            pool.map(
                lambda k: s3.client.put_object(Bucket=s3.bucket, Key=f"workloads/{workload.id}/{k}", Body=b"l"), keys
            )
        )
    past = timezone.now() - timedelta(seconds=1)
    WorkloadStorageObject.objects.bulk_create(
        WorkloadStorageObject(workload=workload, object_key=k, size_bytes=1, expires_at=past) for k in keys
    )
    kept = WorkloadStorageObject.objects.create(workload=workload, object_key="state/keep", size_bytes=1)
    s3.client.put_object(Bucket=s3.bucket, Key=f"workloads/{workload.id}/state/keep", Body=b"k")
    s3.calls.clear()

    assert storage_expired_delete() == 2500

    assert s3.calls.get("DeleteObjects") == 3
    assert s3.calls.get("DeleteObject", 0) == 0
    assert s3.keys() == [f"workloads/{workload.id}/state/keep"]
    assert list(WorkloadStorageObject.objects.filter(workload=workload)) == [kept]
