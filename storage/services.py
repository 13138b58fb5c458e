"""Storage writes: one workload's storage (``WorkloadStorageManager``) and what views, tasks and workflows call.

The manager (the source's class, docs/architecture.md §9) issues upload and
download URLs (quota checked before an upload URL is given), records completed
uploads in the object index after checking the real object (size and SHA-256),
and refuses and removes an upload that would take the workload over its quota,
so recorded usage never exceeds it. Checkpoints are sets of objects under
``checkpoints/{checkpoint_id}/`` verified against their manifest. The functions
below it are the workflows' initialize / schedule-cleanup steps, uploads,
checkpoints and expiry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from arbitrage.errors import DomainError
from storage import kv as storage_kv
from storage import selectors
from storage.backends import FilesystemBackend, S3Backend, UploadTarget, storage_backend
from storage.errors import (
    CheckpointError,
    MultipartNotSupportedError,
    ObjectNotFoundError,
    QuotaExceededError,
    StorageDisabledError,
    UploadVerificationError,
)
from storage.keys import full_key, key_validate
from storage.models import CheckpointStatus, WorkloadCheckpoint, WorkloadStorageConfig, WorkloadStorageObject

DEFAULT_CONTENT_TYPE = "application/octet-stream"
MAX_CHECKPOINT_CHUNKS = 10_000
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_TYPE = re.compile(r"^[\x21-\x7e][\x20-\x7e]{0,254}$")


@dataclass(frozen=True)
class NewObject:
    key: str
    size_bytes: int
    checksum: str
    content_type: str


def checkpoint_prefix(checkpoint_id: str) -> str:
    return f"checkpoints/{checkpoint_id}/"


def chunk_name(number: int) -> str:
    return f"data/chunk-{number:03d}.bin"


class WorkloadStorageManager:
    def __init__(self, workload_id: UUID | str, *, backend: S3Backend | FilesystemBackend | None = None) -> None:
        self.workload_id = UUID(str(workload_id))
        self.backend = backend or storage_backend()

    # --- config and quota ---------------------------------------------------------

    def config(self) -> WorkloadStorageConfig:
        config = selectors.storage_config_get(workload_id=self.workload_id)
        if config is None:
            raise StorageDisabledError("Storage is not enabled for this workload.")
        return config

    def used_bytes(self) -> int:
        return selectors.storage_used_bytes(workload_id=self.workload_id)

    def remaining_bytes(self, config: WorkloadStorageConfig | None = None) -> int:
        config = config or self.config()
        return max(0, config.storage_quota_bytes - self.used_bytes())

    def check_quota(self, size_bytes: int = 0) -> bool:
        """The source's check: room left, and room for ``size_bytes`` more when it is known."""
        config = self.config()
        used = self.used_bytes()
        return used < config.storage_quota_bytes and used + size_bytes <= config.storage_quota_bytes

    def _writable_config(self) -> WorkloadStorageConfig:
        config = self.config()
        if config.read_only_since is not None:  # set when the workload's termination scheduled the cleanup
            raise StorageDisabledError("The workload is terminated: its storage is read-only until it expires.")
        return config

    # --- URLs ---------------------------------------------------------------------

    def generate_upload_url(
        self,
        key: str,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        size_bytes: int | None = None,
        expires_in: int | None = None,
    ) -> UploadTarget:
        key = key_validate(key)
        content_type = _content_type(content_type)
        expires_in = _expiry(expires_in)
        config = self._writable_config()
        if not self.check_quota(size_bytes or 0):
            raise QuotaExceededError(
                "Storage quota exceeded", quota_bytes=config.storage_quota_bytes, used_bytes=self.used_bytes()
            )
        # An overwrite frees the old object's bytes.
        used_without = selectors.storage_used_bytes(workload_id=self.workload_id, exclude_keys=(key,))
        remaining = max(0, config.storage_quota_bytes - used_without)
        target_key = full_key(self.workload_id, key)
        if size_bytes is not None and size_bytes > settings.STORAGE_MULTIPART_THRESHOLD_BYTES:
            if not self.backend.supports_multipart:
                return self.backend.upload_target(
                    target_key, content_type=content_type, max_bytes=size_bytes, expires_in=expires_in
                )
            return self.backend.multipart_begin(
                target_key,
                content_type=content_type,
                size_bytes=size_bytes,
                part_bytes=settings.STORAGE_MULTIPART_PART_BYTES,
                expires_in=expires_in,
            )
        max_bytes = remaining if size_bytes is None else size_bytes
        return self.backend.upload_target(
            target_key, content_type=content_type, max_bytes=max_bytes, expires_in=expires_in
        )

    def generate_download_url(self, key: str, *, expires_in: int | None = None) -> tuple[str, datetime]:
        key = key_validate(key)
        expires_in = _expiry(expires_in)
        self.config()
        target_key = full_key(self.workload_id, key)
        indexed = WorkloadStorageObject.objects.filter(workload_id=self.workload_id, object_key=key).exists()
        if not indexed or self.backend.stat(target_key) is None:
            raise ObjectNotFoundError("Object not found", key=key)
        expires_at = datetime.fromtimestamp(int(timezone.now().timestamp()) + expires_in, tz=UTC)
        return self.backend.download_url(target_key, expires_in=expires_in), expires_at

    # --- recording uploads --------------------------------------------------------

    def complete_upload(
        self,
        key: str,
        *,
        sha256: str | None = None,
        size_bytes: int | None = None,
        content_type: str = "",
        upload_id: str | None = None,
        parts: list[dict[str, Any]] | None = None,
    ) -> WorkloadStorageObject:
        """Record an upload after checking the real object; refuse (and remove it) on a mismatch or over quota."""
        key = key_validate(key)
        if sha256 is not None and not _SHA256.match(sha256):
            raise DomainError("sha256 must be 64 lowercase hexadecimal characters.")
        content_type = _content_type(content_type) if content_type else ""
        self._writable_config()
        target_key = full_key(self.workload_id, key)
        if upload_id is not None:
            if not self.backend.supports_multipart:
                raise MultipartNotSupportedError("Multipart uploads need the S3 backend.")
            self.backend.multipart_complete(target_key, upload_id=upload_id, parts=parts or [])
        stat = self.backend.stat(target_key)
        if stat is None:
            raise ObjectNotFoundError("Object not found: nothing was uploaded under this key.", key=key)
        actual = self.backend.sha256(target_key)
        problem = None
        if size_bytes is not None and stat.size != size_bytes:
            problem = f"the object has {stat.size} bytes, not the {size_bytes} declared"
        elif sha256 is not None and actual != sha256:
            problem = "its SHA-256 differs from the one declared"
        if problem:
            self._remove_refused([key])
            raise UploadVerificationError(f"Upload refused and removed: {problem}.", key=key)
        (stored,) = self.record_objects([NewObject(key, stat.size, actual, content_type)])
        return stored

    def record_objects(self, objects: list[NewObject]) -> list[WorkloadStorageObject]:
        """Add (or replace) index rows, all or none, never taking usage over the quota."""
        keys = tuple(o.key for o in objects)
        with transaction.atomic():
            # The config row lock serialises every recording for this workload.
            config = WorkloadStorageConfig.objects.select_for_update().get(
                workload_id=self.workload_id, storage_enabled=True
            )
            used = selectors.storage_used_bytes(workload_id=self.workload_id, exclude_keys=keys)
            new_bytes = sum(o.size_bytes for o in objects)
            over = used + new_bytes > config.storage_quota_bytes
            if not over:
                stored = []
                for o in objects:
                    row, _ = WorkloadStorageObject.objects.update_or_create(
                        workload_id=self.workload_id,
                        object_key=o.key,
                        defaults={
                            "size_bytes": o.size_bytes,
                            "checksum": o.checksum,
                            "content_type": o.content_type,
                            "expires_at": None,
                        },
                    )
                    stored.append(row)
                self._kv_update_on_commit(config.storage_quota_bytes)
                return stored
        self._remove_refused(list(keys))
        raise QuotaExceededError(
            "Storage quota exceeded: the upload was refused and removed.",
            quota_bytes=config.storage_quota_bytes,
            used_bytes=used,
            upload_bytes=new_bytes,
        )

    def _remove_refused(self, keys: list[str]) -> None:
        """The backend objects go first, then any index rows (an overwrite replaced their bytes)."""
        self.backend.delete_many(full_key(self.workload_id, k) for k in keys)
        with transaction.atomic():
            WorkloadStorageObject.objects.filter(workload_id=self.workload_id, object_key__in=keys).delete()
            config = WorkloadStorageConfig.objects.get(workload_id=self.workload_id)
            self._kv_update_on_commit(config.storage_quota_bytes)

    def _kv_update_on_commit(self, quota_bytes: int) -> None:
        workload_id = self.workload_id

        def update() -> None:
            used = selectors.storage_used_bytes(workload_id=workload_id)
            storage_kv.kv_set_storage(workload_id=workload_id, quota_bytes=quota_bytes, used_bytes=used)

        transaction.on_commit(update)

    # --- checkpoints ----------------------------------------------------------------

    def begin_checkpoint(
        self, *, chunks: list[dict[str, Any]], metadata: dict[str, Any] | None = None, expires_in: int | None = None
    ) -> dict[str, Any]:
        """A new checkpoint from its chunk list (``size_bytes`` and ``sha256`` each): upload URLs for every chunk."""
        expires_in = _expiry(expires_in)
        if not chunks or len(chunks) > MAX_CHECKPOINT_CHUNKS:
            raise CheckpointError(f"A checkpoint has 1 to {MAX_CHECKPOINT_CHUNKS} chunks.")
        entries = []
        for number, chunk in enumerate(chunks, 1):
            size, digest = chunk.get("size_bytes"), chunk.get("sha256")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise CheckpointError(f"Chunk {number}: size_bytes must be a non-negative integer.")
            if not isinstance(digest, str) or not _SHA256.match(digest):
                raise CheckpointError(f"Chunk {number}: sha256 must be 64 lowercase hexadecimal characters.")
            entries.append({"name": chunk_name(number), "size_bytes": size, "sha256": digest})
        total = sum(e["size_bytes"] for e in entries)
        config = self._writable_config()
        if not self.check_quota(total):
            raise QuotaExceededError(
                "Storage quota exceeded", quota_bytes=config.storage_quota_bytes, used_bytes=self.used_bytes()
            )
        checkpoint = self._create_checkpoint(entries, metadata or {}, total)
        prefix = checkpoint_prefix(checkpoint.checkpoint_id)
        targets = []
        for entry in entries:
            key = prefix + entry["name"]
            target = self.backend.upload_target(
                full_key(self.workload_id, key),
                content_type=DEFAULT_CONTENT_TYPE,
                max_bytes=entry["size_bytes"],
                expires_in=expires_in,
            )
            targets.append({**entry, "key": key, "upload": target})
        return {"checkpoint": checkpoint, "prefix": prefix, "chunks": targets}

    def _create_checkpoint(self, entries: list[dict[str, Any]], metadata: dict[str, Any], total: int):
        for _ in range(5):
            now = timezone.now()
            checkpoint_id = now.strftime("%Y%m%dT%H%M%S%fZ")
            manifest = {
                "version": 1,
                "workload_id": str(self.workload_id),
                "checkpoint_id": checkpoint_id,
                "created_at": now.isoformat(),
                "metadata": metadata,
                "chunks": entries,
            }
            try:
                with transaction.atomic():
                    return WorkloadCheckpoint.objects.create(
                        workload_id=self.workload_id, checkpoint_id=checkpoint_id, manifest=manifest, size_bytes=total
                    )
            except IntegrityError:
                continue  # two begins in the same microsecond: take the next one
        raise CheckpointError("Could not allocate a checkpoint id; try again.")

    def complete_checkpoint(self, checkpoint_id: str) -> WorkloadCheckpoint:
        """Verify every chunk against the manifest, write manifest.json, record the objects: it is complete."""
        checkpoint = WorkloadCheckpoint.objects.filter(
            workload_id=self.workload_id, checkpoint_id=checkpoint_id
        ).first()
        if checkpoint is None:
            raise ObjectNotFoundError("Checkpoint not found.", checkpoint_id=checkpoint_id)
        if checkpoint.status == CheckpointStatus.COMPLETE:
            return checkpoint
        if checkpoint.status != CheckpointStatus.PENDING:
            raise CheckpointError(f"Checkpoint is {checkpoint.status.lower()}.", checkpoint_id=checkpoint_id)
        self._writable_config()
        prefix = checkpoint_prefix(checkpoint_id)
        problem = self._verify_chunks(prefix, checkpoint.manifest["chunks"])
        if problem:
            WorkloadCheckpoint.objects.filter(pk=checkpoint.pk).update(error=problem)
            raise CheckpointError(f"Checkpoint incomplete or corrupt: {problem}", checkpoint_id=checkpoint_id)
        manifest_bytes = json.dumps(checkpoint.manifest, indent=2, sort_keys=True).encode()
        manifest_key = prefix + "manifest.json"
        self.backend.write(full_key(self.workload_id, manifest_key), manifest_bytes, content_type="application/json")
        objects = [
            NewObject(prefix + c["name"], c["size_bytes"], c["sha256"], DEFAULT_CONTENT_TYPE)
            for c in checkpoint.manifest["chunks"]
        ]
        objects.append(
            NewObject(manifest_key, len(manifest_bytes), hashlib.sha256(manifest_bytes).hexdigest(), "application/json")
        )
        self.record_objects(objects)
        WorkloadCheckpoint.objects.filter(pk=checkpoint.pk).update(
            status=CheckpointStatus.COMPLETE, completed_at=timezone.now(), error=""
        )
        checkpoint.refresh_from_db()
        return checkpoint

    def _verify_chunks(self, prefix: str, chunks: list[dict[str, Any]]) -> str | None:
        for chunk in chunks:
            key = full_key(self.workload_id, prefix + chunk["name"])
            stat = self.backend.stat(key)
            if stat is None:
                return f"{chunk['name']} is missing"
            if stat.size != chunk["size_bytes"]:
                return f"{chunk['name']} has {stat.size} bytes, the manifest says {chunk['size_bytes']}"
            if self.backend.sha256(key) != chunk["sha256"]:
                return f"{chunk['name']} does not match its SHA-256 in the manifest"
        return None

    def latest_checkpoint(self, *, expires_in: int | None = None) -> dict[str, Any] | None:
        """The newest complete checkpoint that still verifies, with download URLs; a corrupt one is set aside."""
        expires_in = _expiry(expires_in)
        self.config()
        for checkpoint in selectors.checkpoint_complete_list(workload_id=self.workload_id):
            prefix = checkpoint_prefix(checkpoint.checkpoint_id)
            problem = self._verify_manifest(prefix, checkpoint.manifest) or self._verify_chunks(
                prefix, checkpoint.manifest["chunks"]
            )
            if problem:
                WorkloadCheckpoint.objects.filter(pk=checkpoint.pk).update(
                    status=CheckpointStatus.CORRUPT, error=problem
                )
                continue
            chunks = []
            for chunk in checkpoint.manifest["chunks"]:
                key = prefix + chunk["name"]
                url = self.backend.download_url(full_key(self.workload_id, key), expires_in=expires_in)
                chunks.append({**chunk, "key": key, "download_url": url})
            manifest_url = self.backend.download_url(
                full_key(self.workload_id, prefix + "manifest.json"), expires_in=expires_in
            )
            return {
                "checkpoint": checkpoint,
                "manifest": checkpoint.manifest,
                "manifest_url": manifest_url,
                "chunks": chunks,
                "expires_at": datetime.fromtimestamp(int(timezone.now().timestamp()) + expires_in, tz=UTC),
            }
        return None

    def _verify_manifest(self, prefix: str, manifest: dict[str, Any]) -> str | None:
        key = full_key(self.workload_id, prefix + "manifest.json")
        if self.backend.stat(key) is None:
            return "manifest.json is missing"
        try:
            stored = json.loads(self.backend.read(key))
        except ValueError:
            return "manifest.json is not valid JSON"
        if stored != manifest:
            return "manifest.json differs from the one recorded"
        return None


def _expiry(expires_in: int | None) -> int:
    if expires_in is None:
        return settings.STORAGE_URL_EXPIRY_SECONDS
    if (
        isinstance(expires_in, bool)
        or not isinstance(expires_in, int)
        or not (1 <= expires_in <= settings.STORAGE_URL_MAX_EXPIRY_SECONDS)
    ):
        raise DomainError(
            f"expires_in must be between 1 and {settings.STORAGE_URL_MAX_EXPIRY_SECONDS} seconds.",
            fields={"expires_in": ["Out of range."]},
        )
    return expires_in


def _content_type(content_type: str) -> str:
    if not isinstance(content_type, str) or not _CONTENT_TYPE.match(content_type):
        raise DomainError("content_type must be 1 to 255 printable ASCII characters.")
    return content_type


# --- what views, tasks and workflows call ---------------------------------------------

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
