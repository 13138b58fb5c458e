"""The routing KV: the fast key-value view of where each workload answers.

Keys are the source design's: ``workload:{id}:endpoint`` and
``workload:{id}:status``. The KV is the Django cache alias ``routing`` (Redis in
services mode, a cross-process file cache embedded); ``WorkloadRouting`` rows in
the database stay the source of truth.
"""

from __future__ import annotations

from uuid import UUID

from django.core.cache import caches


def _kv():
    return caches["routing"]


def endpoint_key(workload_id: UUID | str) -> str:
    return f"workload:{workload_id}:endpoint"


def status_key(workload_id: UUID | str) -> str:
    return f"workload:{workload_id}:status"


def kv_set_status(*, workload_id: UUID | str, status: str) -> None:
    _kv().set(status_key(workload_id), status, timeout=None)


def kv_get_status(*, workload_id: UUID | str) -> str | None:
    return _kv().get(status_key(workload_id))


def kv_set_endpoint(*, workload_id: UUID | str, endpoint: str) -> None:
    _kv().set(endpoint_key(workload_id), endpoint, timeout=None)


def kv_get_endpoint(*, workload_id: UUID | str) -> str | None:
    return _kv().get(endpoint_key(workload_id))


def kv_delete(*, workload_id: UUID | str) -> None:
    _kv().delete_many([endpoint_key(workload_id), status_key(workload_id)])


def kv_delete_endpoint(*, workload_id: UUID | str) -> None:
    _kv().delete(endpoint_key(workload_id))


def kv_get(key: str) -> str | None:
    return _kv().get(key)
