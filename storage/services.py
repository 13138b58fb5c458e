"""Storage writes: the workflows' initialize / schedule-cleanup steps, uploads, checkpoints, expiry.

URL issuing and upload recording go through ``WorkloadStorageManager`` (one
workload's storage, storage/manager.py); these functions are what views, tasks
and workflows call.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from storage import kv as storage_kv
from storage import selectors
from storage.backends import FilesystemBackend, S3Backend, UploadTarget, storage_backend
from storage.keys import full_key
from storage.manager import WorkloadStorageManager
from storage.models import WorkloadCheckpoint, WorkloadStorageConfig, WorkloadStorageObject

logger = logging.getLogger(__name__)
_MANIFEST_KEY = re.compile(r"^checkpoints/([^/]+)/manifest\.json$")


def storage_initialize(*, workload_id: UUID | str, quota_bytes: int, retention_days: int) -> WorkloadStorageConfig:
    """The storage config record and the KV keys for fast quota checks (usage from the index)."""
    config, _ = WorkloadStorageConfig.objects.update_or_create(
        workload_id=workload_id,
        defaults={"storage_enabled": True, "storage_quota_bytes": quota_bytes, "retention_days": retention_days},
    )
    transaction.on_commit(
        lambda: storage_kv.kv_set_storage(
            workload_id=workload_id,
            quota_bytes=quota_bytes,
            used_bytes=selectors.storage_used_bytes(workload_id=workload_id),
        )
    )
    return config


def storage_schedule_cleanup(*, workload_id: UUID | str) -> datetime | None:
    """Make the workload's storage read-only and give every object an expiry of now + retention; None when off.

    Objects that already have an expiry keep it (the source's ``expires_at IS NULL``).
    """
    config = WorkloadStorageConfig.objects.filter(workload_id=workload_id, storage_enabled=True).first()
    if config is None:
        return None
    now = timezone.now()
    expires_at = now + timedelta(days=config.retention_days)
    # The workload has ended: from now on its storage is read-only until it expires.
    WorkloadStorageConfig.objects.filter(pk=config.pk, read_only_since__isnull=True).update(read_only_since=now)
    WorkloadStorageObject.objects.filter(workload_id=workload_id, expires_at__isnull=True).update(expires_at=expires_at)
    transaction.on_commit(lambda: storage_kv.kv_delete_storage(workload_id=workload_id))
    return expires_at


# --- uploads and downloads ----------------------------------------------------------------


def storage_upload_url_create(
    *,
    workload_id: UUID | str,
    key: str,
    content_type: str = "application/octet-stream",
    size_bytes: int | None = None,
    expires_in: int | None = None,
) -> UploadTarget:
    return WorkloadStorageManager(workload_id).generate_upload_url(
        key, content_type=content_type, size_bytes=size_bytes, expires_in=expires_in
    )


def storage_upload_complete(
    *,
    workload_id: UUID | str,
    key: str,
    sha256: str | None = None,
    size_bytes: int | None = None,
    content_type: str = "",
    upload_id: str | None = None,
    parts: list[dict[str, Any]] | None = None,
) -> WorkloadStorageObject:
    return WorkloadStorageManager(workload_id).complete_upload(
        key, sha256=sha256, size_bytes=size_bytes, content_type=content_type, upload_id=upload_id, parts=parts
    )


def storage_download_url_create(
    *, workload_id: UUID | str, key: str, expires_in: int | None = None
) -> tuple[str, datetime]:
    return WorkloadStorageManager(workload_id).generate_download_url(key, expires_in=expires_in)


# --- checkpoints ----------------------------------------------------------------------------


def checkpoint_begin(
    *,
    workload_id: UUID | str,
    chunks: list[dict[str, Any]],
    metadata: dict[str, Any] | None = None,
    expires_in: int | None = None,
) -> dict[str, Any]:
    """``{"checkpoint": WorkloadCheckpoint, "prefix", "chunks": [{name, key, size_bytes, sha256, upload}]}``."""
    return WorkloadStorageManager(workload_id).begin_checkpoint(chunks=chunks, metadata=metadata, expires_in=expires_in)


def checkpoint_complete(*, workload_id: UUID | str, checkpoint_id: str) -> WorkloadCheckpoint:
    return WorkloadStorageManager(workload_id).complete_checkpoint(checkpoint_id)


def checkpoint_latest_for_restore(*, workload_id: UUID | str, expires_in: int | None = None) -> dict[str, Any] | None:
    """The newest complete checkpoint that verifies, with download URLs; corrupt ones are marked and skipped."""
    return WorkloadStorageManager(workload_id).latest_checkpoint(expires_in=expires_in)


# --- retention --------------------------------------------------------------------------------


def storage_expired_delete(
    *,
    now: datetime | None = None,
    batch_size: int | None = None,
    backend: S3Backend | FilesystemBackend | None = None,
) -> int:
    """Delete every expired object, backend first and index second, a batch (one DeleteObjects) at a time.

    An index row goes only once the backend confirmed its object deleted, so a
    crash mid-batch leaves rows whose object may be gone already (deleting it
    again is harmless) and never an object without its row. Keys the backend
    refused stay indexed for the next run. Returns the number deleted.
    """
    now = now or timezone.now()
    batch_size = batch_size or settings.STORAGE_EXPIRY_BATCH_SIZE
    backend = backend or storage_backend()
    deleted_total = 0
    after_id = 0
    while True:
        rows = list(
            WorkloadStorageObject.objects.filter(expires_at__lte=now, id__gt=after_id)
            .order_by("id")
            .values_list("id", "workload_id", "object_key")[:batch_size]
        )
        if not rows:
            break
        after_id = rows[-1][0]
        by_key = {full_key(workload_id, key): (row_id, workload_id, key) for row_id, workload_id, key in rows}
        gone = backend.delete_many(by_key)
        if len(gone) < len(by_key):
            logger.warning("storage expiry: the backend kept %d of %d objects", len(by_key) - len(gone), len(by_key))
        with transaction.atomic():
            WorkloadStorageObject.objects.filter(id__in=[by_key[k][0] for k in gone]).delete()
            for k in gone:
                _, workload_id, key = by_key[k]
                match = _MANIFEST_KEY.match(key)
                if match:
                    WorkloadCheckpoint.objects.filter(workload_id=workload_id, checkpoint_id=match.group(1)).delete()
        deleted_total += len(gone)
        if len(rows) < batch_size:
            break
    return deleted_total
