"""The embedded backend: Django-signed, expiring URLs; keys and access checked."""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

import pytest
from django.core import signing

from storage.backends import SIGNING_SALT
from tests.storage.conftest import storage_url, storage_workload, upload_target, url_path

pytestmark = pytest.mark.django_db


_path = url_path
_upload_url = upload_target


def test_upload_complete_download_round_trip(api, workload, embedded, settings):
    target = _upload_url(api, workload, "state/config.json", content_type="application/json")
    assert target["method"] == "PUT"
    assert target["url"].startswith(settings.PUBLIC_API_URL + "/storage/objects/workloads/")
    body = b'{"epoch": 3}'
    assert api.put(_path(target["url"]), body, content_type="application/json").status_code == 200

    done = api.post(
        storage_url(workload.id, "uploads/complete"),
        {"key": "state/config.json", "sha256": hashlib.sha256(body).hexdigest()},
        format="json",
    )
    assert done.status_code == 201, done.json()
    assert done.json()["size_bytes"] == len(body)

    link = api.post(storage_url(workload.id, "downloads"), {"key": "state/config.json"}, format="json").json()
    served = api.get(_path(link["url"]))
    assert served.status_code == 200
    assert b"".join(served.streaming_content) == body

    detail = api.get(f"/api/v1/workloads/{workload.id}").json()
    assert detail["storage"] == {
        "used_bytes": len(body),
        "reserved_bytes": 0,
        "quota_bytes": 10 * 1024**2,
        "retention_days": 7,
        "object_count": 1,
    }


def test_tampered_token_is_refused_and_nothing_written(api, workload, embedded):
    target = _upload_url(api, workload, "state/a.bin")
    path = _path(target["url"])
    tampered = path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")
    answer = api.put(tampered, b"evil", content_type="application/octet-stream")
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "invalid_signature"
    assert list(embedded.list_keys("workloads/")) == []


def test_expired_token_is_refused_and_nothing_written(api, workload, embedded):
    key = f"workloads/{workload.id}/state/a.bin"
    url = embedded.signed_url(key, operation="put", expires_in=-1, max_bytes=100)
    assert api.put(_path(url), b"late", content_type="application/octet-stream").status_code == 403
    assert embedded.stat(key) is None


def test_token_for_another_key_or_operation_is_refused(api, workload, embedded):
    target = _upload_url(api, workload, "state/a.bin")
    token = urlsplit(target["url"]).query
    other = f"/storage/objects/workloads/{workload.id}/state/b.bin?{token}"
    assert api.put(other, b"x", content_type="application/octet-stream").status_code == 403
    # An upload token does not read, and a read token does not write.
    assert api.get(_path(target["url"])).status_code == 403
    assert list(embedded.list_keys("workloads/")) == []


def test_signed_payload_cannot_be_forged_without_the_secret(api, workload, embedded):
    key = f"workloads/{workload.id}/state/a.bin"
    forged = signing.dumps({"k": key, "op": "put", "max": 10, "exp": 2**40}, key="x" * 50, salt=SIGNING_SALT)
    assert api.put(f"/storage/objects/{key}?token={forged}", b"x", content_type="text/plain").status_code == 403
    assert embedded.stat(key) is None


def test_body_over_the_url_limit_is_refused_and_nothing_written(api, workload, embedded):
    target = _upload_url(api, workload, "state/a.bin", size_bytes=4)
    assert api.put(_path(target["url"]), b"12345678", content_type="application/octet-stream").status_code == 413
    assert list(embedded.list_keys("workloads/")) == []


def test_quota_counts_the_used_and_the_reserved_bytes(api, customer, embedded):
    workload = storage_workload(customer, quota_bytes=10)
    target = _upload_url(api, workload, "artifacts/one.bin")
    assert target["max_bytes"] == 10  # nothing declared: the URL may take (and reserves) all the room left
    assert api.put(_path(target["url"]), b"123456", content_type="application/octet-stream").status_code == 200
    assert (
        api.post(storage_url(workload.id, "uploads/complete"), {"key": "artifacts/one.bin"}, format="json").status_code
        == 201
    )

    # The next URL allows only what is left, and holds it while open: no room for a third.
    target = _upload_url(api, workload, "artifacts/two.bin")
    assert target["max_bytes"] == 4
    assert api.get(f"/api/v1/workloads/{workload.id}").json()["storage"]["reserved_bytes"] == 4
    full = api.post(storage_url(workload.id, "uploads"), {"key": "artifacts/three.bin"}, format="json")
    assert full.status_code == 413
    assert full.json()["error"]["message"] == "Storage quota exceeded"
    assert full.json()["error"]["reserved_bytes"] == 4

    # More than it allows is refused with nothing written; it can still take what it allows.
    assert api.put(_path(target["url"]), b"123456", content_type="application/octet-stream").status_code == 413
    assert list(embedded.list_keys(f"workloads/{workload.id}/.uploads/")) == []
    assert api.put(_path(target["url"]), b"1234", content_type="application/octet-stream").status_code == 200
    done = api.post(storage_url(workload.id, "uploads/complete"), {"key": "artifacts/two.bin"}, format="json")
    assert done.status_code == 201
    storage = api.get(f"/api/v1/workloads/{workload.id}").json()["storage"]
    assert (storage["used_bytes"], storage["reserved_bytes"]) == (10, 0)
    again = api.post(storage_url(workload.id, "uploads"), {"key": "artifacts/three.bin"}, format="json")
    assert again.status_code == 413


def test_checksum_mismatch_is_refused_and_removed(api, workload, embedded):
    target = _upload_url(api, workload, "state/a.bin")
    api.put(_path(target["url"]), b"abc", content_type="application/octet-stream")
    answer = api.post(
        storage_url(workload.id, "uploads/complete"), {"key": "state/a.bin", "sha256": "0" * 64}, format="json"
    )
    assert answer.status_code == 409
    assert embedded.stat(f"workloads/{workload.id}/state/a.bin") is None


def test_missing_object_is_a_clear_404(api, workload, embedded):
    answer = api.post(storage_url(workload.id, "downloads"), {"key": "state/none.bin"}, format="json")
    assert answer.status_code == 404
    assert answer.json()["error"]["message"] == "Object not found"


def test_agent_token_reaches_only_its_own_workload(agent_api, workload, customer, embedded):
    assert agent_api.post(storage_url(workload.id, "uploads"), {"key": "state/x"}, format="json").status_code == 201
    other = storage_workload(customer)
    for path in ("uploads", "downloads"):
        answer = agent_api.post(storage_url(other.id, path), {"key": "state/x"}, format="json")
        assert answer.status_code == 404
    assert agent_api.get(storage_url(other.id, "objects")).status_code == 404
    assert agent_api.get(storage_url(other.id, "checkpoints")).status_code == 404


def test_another_customer_cannot_reach_the_storage(other_api, workload, embedded):
    assert other_api.post(storage_url(workload.id, "uploads"), {"key": "state/x"}, format="json").status_code == 404
    assert other_api.get(storage_url(workload.id, "objects")).status_code == 404


def test_storage_off_is_a_409_and_null_in_the_detail(api, customer, embedded):
    from tests.factories import WorkloadFactory

    workload = WorkloadFactory(customer=customer)
    answer = api.post(storage_url(workload.id, "uploads"), {"key": "state/x"}, format="json")
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "storage_disabled"
    assert api.get(f"/api/v1/workloads/{workload.id}").json()["storage"] is None


def test_url_expiry_is_bounded(api, workload, embedded, settings):
    too_long = settings.STORAGE_URL_MAX_EXPIRY_SECONDS + 1
    for expires_in in (0, too_long):
        answer = api.post(
            storage_url(workload.id, "uploads"), {"key": "state/x", "expires_in": expires_in}, format="json"
        )
        assert answer.status_code == 400
        assert "expires_in" in answer.json()["error"]["fields"]


BAD_KEYS = [
    ("", "may not be blank"),
    ("../secret", "'..'"),
    ("state/../../other/state/x", "'..'"),
    ("state/./x", "'.'"),
    ("/etc/passwd", "absolute"),
    ("state\\x", "backslash"),
    ("state/a\x00b", "Null characters"),  # DRF refuses NUL before the key check does
    ("state/a\nb", "control character"),
    ("state//x", "empty segment"),
    ("state/x/", "empty segment"),
    ("logs/app.log", "must start with"),
    ("state", "must start with"),
    ("state/" + "a" * 600, "longer than"),
    ("state/" + "a" * 300, "segment longer"),
]


@pytest.mark.parametrize(("key", "message"), BAD_KEYS)
def test_bad_keys_are_refused_with_a_clear_error(api, workload, embedded, key, message):
    for path in ("uploads", "downloads", "uploads/complete"):
        answer = api.post(storage_url(workload.id, path), {"key": key}, format="json")
        assert answer.status_code == 400, (path, answer.json())
        assert message in answer.json()["error"]["message"], answer.json()
    assert list(embedded.list_keys("")) == []


def test_url_path_traversal_never_leaves_the_storage_root(api, workload, embedded, tmp_path):
    (tmp_path / "secret.txt").write_text("secret")
    for path in ("/storage/objects/../secret.txt?token=x", "/storage/objects/%2e%2e/secret.txt?token=x"):
        assert api.get(path).status_code in (403, 404)


@pytest.mark.parametrize("key", [k for k, _ in BAD_KEYS] + ["state/a\x1fb", "state/a\x7fb", "C:\\x"])
def test_key_validate_refuses_every_bad_form(key):
    from storage.errors import InvalidKeyError
    from storage.keys import key_validate

    with pytest.raises(InvalidKeyError):
        key_validate(key)


@pytest.mark.parametrize(
    "key", ["state/config.json", "checkpoints/20260101T000000Z/data/chunk-001.bin", "artifacts/a b/ü.csv"]
)
def test_good_keys_pass(key):
    from storage.keys import key_validate

    assert key_validate(key) == key
