"""Storage reads: usage (from the object index, the source of truth), objects, checkpoints."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.db.models import Count, QuerySet, Sum

from storage.models import (
    UPLOAD_OPEN_STATUSES,
    CheckpointStatus,
    WorkloadCheckpoint,
    WorkloadStorageConfig,
    WorkloadStorageObject,
    WorkloadStorageUpload,
)


def storage_used_bytes(*, workload_id: UUID | str, exclude_keys: tuple[str, ...] = ()) -> int:
    objects = WorkloadStorageObject.objects.filter(workload_id=workload_id)
    if exclude_keys:
        objects = objects.exclude(object_key__in=exclude_keys)
    return objects.aggregate(total=Sum("size_bytes"))["total"] or 0


def storage_reserved_bytes(*, workload_id: UUID | str, exclude_ids: tuple[UUID, ...] = ()) -> int:
    """The bytes held by upload URLs not yet completed or expired (each URL's most bytes)."""
    uploads = WorkloadStorageUpload.objects.filter(workload_id=workload_id, status__in=UPLOAD_OPEN_STATUSES)
    if exclude_ids:
        uploads = uploads.exclude(id__in=exclude_ids)
    return uploads.aggregate(total=Sum("reserved_bytes"))["total"] or 0


def storage_upload_open_list(*, workload_id: UUID | str, key: str) -> QuerySet[WorkloadStorageUpload]:
    """The open upload URLs (not checkpoint chunks) for one key, newest first."""
    return WorkloadStorageUpload.objects.filter(
        workload_id=workload_id, object_key=key, checkpoint__isnull=True, status__in=UPLOAD_OPEN_STATUSES
    ).order_by("-created_at")


def storage_config_get(*, workload_id: UUID | str) -> WorkloadStorageConfig | None:
    return WorkloadStorageConfig.objects.filter(workload_id=workload_id, storage_enabled=True).first()


def storage_summary_get(*, workload_id: UUID | str) -> dict[str, Any] | None:
    """Usage and quota for the workload detail; None when storage is off."""
    config = storage_config_get(workload_id=workload_id)
    if config is None:
        return None
    totals = WorkloadStorageObject.objects.filter(workload_id=workload_id).aggregate(
        used=Sum("size_bytes"), count=Count("id")
    )
    return {
        "used_bytes": totals["used"] or 0,
        "reserved_bytes": storage_reserved_bytes(workload_id=workload_id),
        "quota_bytes": config.storage_quota_bytes,
        "retention_days": config.retention_days,
        "object_count": totals["count"],
    }


def storage_object_list(*, workload_id: UUID | str, prefix: str = "") -> QuerySet[WorkloadStorageObject]:
    objects = WorkloadStorageObject.objects.filter(workload_id=workload_id)
    if prefix:
        objects = objects.filter(object_key__startswith=prefix)
    return objects.order_by("object_key")


def checkpoint_list(*, workload_id: UUID | str) -> QuerySet[WorkloadCheckpoint]:
    """Every checkpoint of the workload, newest first."""
    return WorkloadCheckpoint.objects.filter(workload_id=workload_id).order_by("-checkpoint_id")


def checkpoint_complete_list(*, workload_id: UUID | str) -> QuerySet[WorkloadCheckpoint]:
    return checkpoint_list(workload_id=workload_id).filter(status=CheckpointStatus.COMPLETE)


def checkpoint_latest_size(*, workload_id: UUID | str) -> int | None:
    """Bytes of the workload's latest complete checkpoint (what a move carries); None before the first."""
    return checkpoint_complete_list(workload_id=workload_id).values_list("size_bytes", flat=True).first()
