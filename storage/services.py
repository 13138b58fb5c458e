"""Storage writes used by the workflows (initialize-storage, schedule-storage-cleanup)."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from django.db import transaction
from django.utils import timezone

from storage.models import WorkloadStorageConfig, WorkloadStorageObject
from workloads import routing


def storage_initialize(*, workload_id: UUID | str, quota_bytes: int, retention_days: int) -> WorkloadStorageConfig:
    """The storage config record and the KV keys for fast quota checks."""
    config, _ = WorkloadStorageConfig.objects.update_or_create(
        workload_id=workload_id,
        defaults={"storage_enabled": True, "storage_quota_bytes": quota_bytes, "retention_days": retention_days},
    )
    transaction.on_commit(lambda: routing.kv_set_storage(workload_id=workload_id, quota_bytes=quota_bytes))
    return config


def storage_schedule_cleanup(*, workload_id: UUID | str) -> datetime | None:
    """Give every object of the workload an expiry of now + retention; None when storage is off."""
    config = WorkloadStorageConfig.objects.filter(workload_id=workload_id, storage_enabled=True).first()
    if config is None:
        return None
    expires_at = timezone.now() + timedelta(days=config.retention_days)
    WorkloadStorageObject.objects.filter(workload_id=workload_id, expires_at__isnull=True).update(expires_at=expires_at)
    transaction.on_commit(lambda: routing.kv_delete_storage(workload_id=workload_id))
    return expires_at
