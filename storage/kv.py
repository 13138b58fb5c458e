"""Storage's keys in the routing KV (the Django cache alias ``routing``): fast quota checks.

``workload:{id}:storage:enabled|quota|used``, the source design's keys; the
object index in the database stays the source of truth.
"""

from __future__ import annotations

from uuid import UUID

from django.core.cache import caches


def _kv():
    return caches["routing"]


def storage_keys(workload_id: UUID | str) -> dict[str, str]:
    return {
        "enabled": f"workload:{workload_id}:storage:enabled",
        "quota": f"workload:{workload_id}:storage:quota",
        "used": f"workload:{workload_id}:storage:used",
    }


def kv_set_storage(*, workload_id: UUID | str, quota_bytes: int, used_bytes: int = 0) -> None:
    keys = storage_keys(workload_id)
    _kv().set_many(
        {keys["enabled"]: "true", keys["quota"]: str(quota_bytes), keys["used"]: str(used_bytes)}, timeout=None
    )


def kv_delete_storage(*, workload_id: UUID | str) -> None:
    _kv().delete_many(list(storage_keys(workload_id).values()))


def kv_get(key: str) -> str | None:
    return _kv().get(key)
