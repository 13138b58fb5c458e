"""Storage writes: one workload's storage (``WorkloadStorageManager``) and what views, tasks and workflows call.

The manager (the source's class, docs/architecture.md §9) issues upload and
download URLs and records completed uploads in the object index after checking
the real object (size and SHA-256). Every upload URL is a reservation
(``WorkloadStorageUpload``): its most bytes count against the quota from the
moment it is issued, under the config row's lock, so the index plus the open
reservations never exceed the quota. Its bytes go to a staging key of its own
and become the object only when the upload is completed, once: a URL is single
use (the embedded backend refuses a second PUT; on S3 a second completion is
refused and its bytes deleted). A terminated workload's storage is read-only:
no URL, no PUT, no completion. Reservations released by neither a completion
nor a refusal are deleted with their bytes by the expiry sweep once their URL
has expired. Checkpoints are sets of objects under ``checkpoints/{checkpoint_id}/``
verified against their manifest, their chunks uploaded the same way. The
functions below the manager are the workflows' initialize / schedule-cleanup
steps, uploads, checkpoints and expiry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable
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
    StorageReadOnlyError,
    UploadExpiredError,
    UploadNotPendingError,
    UploadTooLargeError,
    UploadUrlUsedError,
    UploadVerificationError,
)
from storage.keys import full_key, key_validate
from storage.models import (
    UPLOAD_OPEN_STATUSES,
    CheckpointStatus,
    UploadStatus,
    WorkloadCheckpoint,
    WorkloadStorageConfig,
    WorkloadStorageObject,
    WorkloadStorageUpload,
)

DEFAULT_CONTENT_TYPE = "application/octet-stream"
MAX_CHECKPOINT_CHUNKS = 10_000
# How long after its URL's expiry an upload is swept: room for clock skew with the
# S3 server, and for a completion begun just before the URL expired.
UPLOAD_EXPIRY_GRACE = timedelta(minutes=5)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_TYPE = re.compile(r"^[\x21-\x7e][\x20-\x7e]{0,254}$")
_CLAIMABLE = (UploadStatus.PENDING, UploadStatus.RECEIVED)
READ_ONLY_MESSAGE = "The workload is terminated: its storage is read-only until it expires."


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


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """``manifest.json`` as written at completion (its size is reserved when the checkpoint begins)."""
    return json.dumps(manifest, indent=2, sort_keys=True).encode()


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

    def reserved_bytes(self) -> int:
        return selectors.storage_reserved_bytes(workload_id=self.workload_id)

    def remaining_bytes(self, config: WorkloadStorageConfig | None = None) -> int:
        config = config or self.config()
        return max(0, config.storage_quota_bytes - self.used_bytes() - self.reserved_bytes())

    def check_quota(self, size_bytes: int = 0) -> bool:
        """The source's check, with open reservations counted as used: room left, and for ``size_bytes`` more."""
        config = self.config()
        committed = self.used_bytes() + self.reserved_bytes()
        return committed < config.storage_quota_bytes and committed + size_bytes <= config.storage_quota_bytes

    def _writable_config(self) -> WorkloadStorageConfig:
        config = self.config()
        if config.read_only_since is not None:  # set when the workload's termination scheduled the cleanup
            raise StorageReadOnlyError(READ_ONLY_MESSAGE)
        return config

    def _lock_for_reservation(self, size_bytes: int) -> tuple[WorkloadStorageConfig, int]:
        """In a transaction: the config row locked, writable, with room for ``size_bytes``; the room left after."""
        config = (
            WorkloadStorageConfig.objects.select_for_update()
            .filter(workload_id=self.workload_id, storage_enabled=True)
            .first()
        )
        if config is None:
            raise StorageDisabledError("Storage is not enabled for this workload.")
        if config.read_only_since is not None:
            raise StorageReadOnlyError(READ_ONLY_MESSAGE)
        used, reserved = self.used_bytes(), self.reserved_bytes()
        committed = used + reserved
        if committed >= config.storage_quota_bytes or committed + size_bytes > config.storage_quota_bytes:
            raise QuotaExceededError(
                "Storage quota exceeded",
                quota_bytes=config.storage_quota_bytes,
                used_bytes=used,
                reserved_bytes=reserved,
            )
        return config, config.storage_quota_bytes - committed

    # --- URLs ---------------------------------------------------------------------

    def generate_upload_url(
        self,
        key: str,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        size_bytes: int | None = None,
        expires_in: int | None = None,
    ) -> UploadTarget:
        """Reserve the upload's bytes (the declared size, else all the room left) and hand out its single-use URL."""
        key = key_validate(key)
        content_type = _content_type(content_type)
        expires_in = _expiry(expires_in)
        with transaction.atomic():
            _, room = self._lock_for_reservation(size_bytes or 0)
            upload = WorkloadStorageUpload.objects.create(
                workload_id=self.workload_id,
                object_key=key,
                reserved_bytes=room if size_bytes is None else size_bytes,
                expires_at=timezone.now() + timedelta(seconds=expires_in),
            )
        multipart = (
            size_bytes is not None
            and size_bytes > settings.STORAGE_MULTIPART_THRESHOLD_BYTES
            and self.backend.supports_multipart
        )
        if multipart:
            target = self.backend.multipart_begin(
                upload.staging_key,
                content_type=content_type,
                size_bytes=size_bytes,
                part_bytes=settings.STORAGE_MULTIPART_PART_BYTES,
                expires_in=expires_in,
            )
        else:
            target = self.backend.upload_target(
                upload.staging_key,
                content_type=content_type,
                max_bytes=upload.reserved_bytes,
                expires_in=expires_in,
                upload_id=str(upload.id),
            )
        WorkloadStorageUpload.objects.filter(pk=upload.pk).update(
            expires_at=target.expires_at, multipart_upload_id=target.upload_id or ""
        )
        return target

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

    # --- receiving bytes (the embedded backend's signed PUT) ----------------------------

    def receive_upload(
        self, upload_id: UUID | str, *, staging_key: str, declared_bytes: int, chunks: Iterable[bytes]
    ) -> int:
        """Take the one PUT an upload URL allows into its staging key; the bytes written.

        The upload moves PENDING -> RECEIVING -> RECEIVED under its row's lock, so a
        second PUT (at once or later) is refused with nothing written; a PUT refused
        for its size wrote nothing and leaves the URL usable.
        """
        with transaction.atomic():
            upload = self._locked_upload(upload_id, staging_key)
            if upload.status != UploadStatus.PENDING:
                raise UploadUrlUsedError("This upload URL was used already: ask for a new one.")
            if declared_bytes > upload.reserved_bytes:
                raise UploadTooLargeError(f"The upload is over the {upload.reserved_bytes} bytes this URL allows.")
            WorkloadStorageUpload.objects.filter(pk=upload.pk).update(status=UploadStatus.RECEIVING)
        try:
            size = self.backend.write_stream(staging_key, chunks, max_bytes=upload.reserved_bytes)
        except OSError:  # the client went away mid-body: nothing was kept, the URL may be used again
            self._set_status([upload.pk], UploadStatus.PENDING, only=(UploadStatus.RECEIVING,))
            raise
        if size is None:
            self._set_status([upload.pk], UploadStatus.PENDING, only=(UploadStatus.RECEIVING,))
            raise UploadTooLargeError(f"The upload is over the {upload.reserved_bytes} bytes this URL allows.")
        with transaction.atomic():
            config = WorkloadStorageConfig.objects.select_for_update().get(workload_id=self.workload_id)
            received = self._set_status([upload.pk], UploadStatus.RECEIVED, only=(UploadStatus.RECEIVING,))
            if config.read_only_since is None and received:
                return size
        # Terminated (or swept) while the body streamed in: the bytes do not stay.
        self.backend.delete(staging_key)
        self._set_status([upload.pk], UploadStatus.REFUSED, only=UPLOAD_OPEN_STATUSES)
        if config.read_only_since is not None:
            raise StorageReadOnlyError(READ_ONLY_MESSAGE)
        raise UploadExpiredError("This upload URL has expired: ask for a new one.")

    def _locked_upload(self, upload_id: UUID | str, staging_key: str) -> WorkloadStorageUpload:
        upload = (
            WorkloadStorageUpload.objects.select_for_update().filter(pk=upload_id, workload_id=self.workload_id).first()
        )
        if upload is None or upload.staging_key != staging_key or self._past_expiry(upload):
            raise UploadExpiredError("This upload URL has expired: ask for a new one.")
        config = WorkloadStorageConfig.objects.select_for_update().get(workload_id=self.workload_id)
        if config.read_only_since is not None:
            raise StorageReadOnlyError(READ_ONLY_MESSAGE)
        return upload

    @staticmethod
    def _past_expiry(upload: WorkloadStorageUpload) -> bool:
        return upload.expires_at + UPLOAD_EXPIRY_GRACE < timezone.now()

    @staticmethod
    def _set_status(ids: list[UUID], status: str, *, only: Iterable[str]) -> int:
        return WorkloadStorageUpload.objects.filter(pk__in=ids, status__in=list(only)).update(status=status)

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
        """Record an upload, once: its staging object checked (size, SHA-256, its reservation), moved to its key.

        Refused, with its bytes deleted, when the object is not what was declared,
        is over what its URL reserved, or the storage is read-only; a key with no
        open upload (completed already, refused, expired) is a 409 and whatever a
        replayed URL left under its staging key is deleted.
        """
        key = key_validate(key)
        if sha256 is not None and not _SHA256.match(sha256):
            raise DomainError("sha256 must be 64 lowercase hexadecimal characters.")
        content_type = _content_type(content_type) if content_type else ""
        if upload_id is not None and not self.backend.supports_multipart:
            raise MultipartNotSupportedError("Multipart uploads need the S3 backend.")
        config = self.config()
        if config.read_only_since is not None:
            self._discard(WorkloadStorageUpload.objects.filter(workload_id=self.workload_id, object_key=key))
            raise StorageReadOnlyError(READ_ONLY_MESSAGE)
        upload = self._upload_to_complete(key, upload_id=upload_id)
        if not self._set_status([upload.pk], UploadStatus.COMPLETING, only=_CLAIMABLE):
            raise UploadNotPendingError("This upload is being completed, or was completed already.", key=key)
        if upload_id is not None:
            try:
                self.backend.multipart_complete(upload.staging_key, upload_id=upload_id, parts=parts or [])
            except UploadVerificationError:
                self._set_status([upload.pk], upload.status, only=(UploadStatus.COMPLETING,))
                raise
        stat = self.backend.stat(upload.staging_key)
        if stat is None:
            self._set_status([upload.pk], upload.status, only=(UploadStatus.COMPLETING,))
            raise ObjectNotFoundError("Object not found: nothing was uploaded under this key.", key=key)
        actual = self.backend.sha256(upload.staging_key)
        problem = None
        if size_bytes is not None and stat.size != size_bytes:
            problem = f"the object has {stat.size} bytes, not the {size_bytes} declared"
        elif sha256 is not None and actual != sha256:
            problem = "its SHA-256 differs from the one declared"
        if problem:
            self._discard([upload])
            raise UploadVerificationError(f"Upload refused and removed: {problem}.", key=key)
        if stat.size > upload.reserved_bytes:  # a presigned PUT (no size cap), or a server that ignores the policy
            self._discard([upload])
            raise QuotaExceededError(
                "Storage quota exceeded: the upload is over the bytes its URL reserved; it was refused and removed.",
                quota_bytes=config.storage_quota_bytes,
                reserved_bytes=upload.reserved_bytes,
                upload_bytes=stat.size,
            )
        self.backend.move(upload.staging_key, full_key(self.workload_id, key))
        (stored,) = self.record_objects([NewObject(key, stat.size, actual, content_type)], release=[upload.pk])
        return stored

    def _upload_to_complete(self, key: str, *, upload_id: str | None) -> WorkloadStorageUpload:
        """The open upload of ``key`` to complete: the multipart one named, else the newest that has its bytes."""
        uploads = [u for u in selectors.storage_upload_open_list(workload_id=self.workload_id, key=key)]
        uploads = [u for u in uploads if not self._past_expiry(u)]
        if upload_id is not None:
            for upload in uploads:
                if upload.multipart_upload_id == upload_id:
                    return upload
        else:
            for upload in uploads:
                if upload.multipart_upload_id or upload.status not in _CLAIMABLE:
                    continue
                if upload.status == UploadStatus.RECEIVED or self.backend.stat(upload.staging_key) is not None:
                    return upload
            if uploads:
                raise ObjectNotFoundError("Object not found: nothing was uploaded under this key.", key=key)
        # Completed already (or refused, or expired): a replayed URL's bytes do not stay.
        self._discard(
            WorkloadStorageUpload.objects.filter(
                workload_id=self.workload_id,
                object_key=key,
                status__in=(UploadStatus.COMPLETED, UploadStatus.REFUSED),
            )
        )
        raise UploadNotPendingError(
            "No open upload for this key: it was completed already, refused, or its URL expired. "
            "Ask for a new upload URL.",
            key=key,
        )

    def _discard(self, uploads: Iterable[WorkloadStorageUpload]) -> None:
        """Delete what these uploads left under their staging keys; the open ones are refused (reservation released)."""
        uploads = [u for u in uploads if u.status != UploadStatus.COMPLETING]  # one in flight finishes on its own
        if not uploads:
            return
        for upload in uploads:
            if upload.multipart_upload_id and self.backend.supports_multipart:
                self.backend.multipart_abort(upload.staging_key, upload_id=upload.multipart_upload_id)
        self.backend.delete_many(u.staging_key for u in uploads)
        self._set_status([u.pk for u in uploads], UploadStatus.REFUSED, only=UPLOAD_OPEN_STATUSES)

    def record_objects(self, objects: list[NewObject], *, release: Iterable[UUID] = ()) -> list[WorkloadStorageObject]:
        """Add (or replace) index rows, all or none, and release the uploads they came from; never over the quota.

        The index plus the other open reservations must fit the quota; when they
        do not, the objects are removed and the uploads refused.
        """
        keys = tuple(o.key for o in objects)
        release = list(release)
        with transaction.atomic():
            # The config row lock serialises every recording and reservation for this workload.
            config = WorkloadStorageConfig.objects.select_for_update().get(
                workload_id=self.workload_id, storage_enabled=True
            )
            used = selectors.storage_used_bytes(workload_id=self.workload_id, exclude_keys=keys)
            reserved = selectors.storage_reserved_bytes(workload_id=self.workload_id, exclude_ids=tuple(release))
            new_bytes = sum(o.size_bytes for o in objects)
            over = used + reserved + new_bytes > config.storage_quota_bytes
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
                WorkloadStorageUpload.objects.filter(pk__in=release).update(status=UploadStatus.COMPLETED)
                self._kv_update_on_commit(config.storage_quota_bytes)
                return stored
        self._remove_refused(list(keys))
        self._set_status(release, UploadStatus.REFUSED, only=UPLOAD_OPEN_STATUSES)
        raise QuotaExceededError(
            "Storage quota exceeded: the upload was refused and removed.",
            quota_bytes=config.storage_quota_bytes,
            used_bytes=used,
            reserved_bytes=reserved,
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
        """A new checkpoint from its chunk list (``size_bytes`` and ``sha256`` each): upload URLs for every chunk.

        Every chunk and the manifest written at completion are reserved at once.
        """
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
        self._writable_config()
        if not self.check_quota(total):  # before a checkpoint id is taken; checked again under the lock
            config = self.config()
            raise QuotaExceededError(
                "Storage quota exceeded",
                quota_bytes=config.storage_quota_bytes,
                used_bytes=self.used_bytes(),
                reserved_bytes=self.reserved_bytes(),
            )
        expires_at = timezone.now() + timedelta(seconds=expires_in)
        with transaction.atomic():
            checkpoint = self._create_checkpoint(entries, metadata or {}, total)
            prefix = checkpoint_prefix(checkpoint.checkpoint_id)
            manifest_size = len(manifest_bytes(checkpoint.manifest))
            self._lock_for_reservation(total + manifest_size)
            uploads = WorkloadStorageUpload.objects.bulk_create(
                [
                    WorkloadStorageUpload(
                        workload_id=self.workload_id,
                        object_key=prefix + entry["name"],
                        reserved_bytes=entry["size_bytes"],
                        checkpoint=checkpoint,
                        expires_at=expires_at,
                    )
                    for entry in entries
                ]
                + [
                    WorkloadStorageUpload(
                        workload_id=self.workload_id,
                        object_key=prefix + "manifest.json",
                        reserved_bytes=manifest_size,
                        checkpoint=checkpoint,
                        expires_at=expires_at,
                    )
                ]
            )
        targets = []
        for entry, upload in zip(entries, uploads, strict=False):
            target = self.backend.upload_target(
                upload.staging_key,
                content_type=DEFAULT_CONTENT_TYPE,
                max_bytes=entry["size_bytes"],
                expires_in=expires_in,
                upload_id=str(upload.id),
            )
            targets.append({**entry, "key": upload.object_key, "upload": target})
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
        """Verify every uploaded chunk against the manifest, move them into place, write manifest.json, record.

        A chunk missing or corrupt leaves the checkpoint pending (409) and its
        uploads open, so the chunk can still be uploaded until the URLs expire.
        """
        checkpoint = WorkloadCheckpoint.objects.filter(
            workload_id=self.workload_id, checkpoint_id=checkpoint_id
        ).first()
        if checkpoint is None:
            raise ObjectNotFoundError("Checkpoint not found.", checkpoint_id=checkpoint_id)
        if checkpoint.status == CheckpointStatus.COMPLETE:
            return checkpoint
        if checkpoint.status != CheckpointStatus.PENDING:
            raise CheckpointError(f"Checkpoint is {checkpoint.status.lower()}.", checkpoint_id=checkpoint_id)
        config = self.config()
        if config.read_only_since is not None:
            self._discard(checkpoint.uploads.all())
            raise StorageReadOnlyError(READ_ONLY_MESSAGE)
        prefix = checkpoint_prefix(checkpoint_id)
        manifest_key = prefix + "manifest.json"
        uploads = {
            u.object_key: u for u in checkpoint.uploads.filter(status__in=_CLAIMABLE) if not self._past_expiry(u)
        }
        chunks = checkpoint.manifest["chunks"]
        if any(prefix + c["name"] not in uploads for c in chunks) or manifest_key not in uploads:
            raise CheckpointError(
                "Checkpoint's upload URLs have expired or are being completed: begin a new checkpoint.",
                checkpoint_id=checkpoint_id,
            )
        problem = self._verify_chunks(chunks, {c["name"]: uploads[prefix + c["name"]].staging_key for c in chunks})
        if problem:
            WorkloadCheckpoint.objects.filter(pk=checkpoint.pk).update(error=problem)
            raise CheckpointError(f"Checkpoint incomplete or corrupt: {problem}", checkpoint_id=checkpoint_id)
        claimed = [u.pk for u in uploads.values()]
        with transaction.atomic():  # the checkpoint row's lock: one completion claims all its uploads, or none
            WorkloadCheckpoint.objects.select_for_update().filter(pk=checkpoint.pk).first()
            if WorkloadStorageUpload.objects.filter(pk__in=claimed, status__in=_CLAIMABLE).count() != len(claimed):
                raise CheckpointError("Checkpoint is being completed already.", checkpoint_id=checkpoint_id)
            self._set_status(claimed, UploadStatus.COMPLETING, only=_CLAIMABLE)
        for chunk in chunks:
            key = prefix + chunk["name"]
            self.backend.move(uploads[key].staging_key, full_key(self.workload_id, key))
        written = manifest_bytes(checkpoint.manifest)
        self.backend.write(full_key(self.workload_id, manifest_key), written, content_type="application/json")
        objects = [NewObject(prefix + c["name"], c["size_bytes"], c["sha256"], DEFAULT_CONTENT_TYPE) for c in chunks]
        objects.append(NewObject(manifest_key, len(written), hashlib.sha256(written).hexdigest(), "application/json"))
        self.record_objects(objects, release=claimed)
        WorkloadCheckpoint.objects.filter(pk=checkpoint.pk).update(
            status=CheckpointStatus.COMPLETE, completed_at=timezone.now(), error=""
        )
        checkpoint.refresh_from_db()
        return checkpoint

    def _verify_chunks(self, chunks: list[dict[str, Any]], keys: dict[str, str]) -> str | None:
        """Each chunk at its backend key (``keys`` by chunk name) against its size and SHA-256 in the manifest."""
        for chunk in chunks:
            key = keys[chunk["name"]]
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
            chunks = checkpoint.manifest["chunks"]
            problem = self._verify_manifest(prefix, checkpoint.manifest) or self._verify_chunks(
                chunks, {c["name"]: full_key(self.workload_id, prefix + c["name"]) for c in chunks}
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


def storage_upload_receive(
    *, workload_id: UUID | str, upload_id: UUID | str, staging_key: str, declared_bytes: int, chunks: Iterable[bytes]
) -> int:
    """The embedded backend's signed PUT: the one body its upload URL allows; the bytes written."""
    return WorkloadStorageManager(workload_id, backend=FilesystemBackend()).receive_upload(
        upload_id, staging_key=staging_key, declared_bytes=declared_bytes, chunks=chunks
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


def storage_expiry_sweep(*, now: datetime | None = None) -> int:
    """The beat task's sweep: expired upload URLs (their bytes and reservations), then expired objects."""
    backend = storage_backend()
    return storage_uploads_expired_delete(now=now, backend=backend) + storage_expired_delete(now=now, backend=backend)


def storage_uploads_expired_delete(
    *,
    now: datetime | None = None,
    batch_size: int | None = None,
    backend: S3Backend | FilesystemBackend | None = None,
) -> int:
    """Delete every upload whose URL expired (``UPLOAD_EXPIRY_GRACE`` ago): its staging bytes, then its row.

    Whatever its state: an upload never completed releases its reservation, and
    one completed or refused takes with it anything a replay of its URL left. A
    multipart upload is aborted first. A row goes only once the backend confirmed
    its staging key deleted. Returns the number of uploads deleted.
    """
    now = now or timezone.now()
    batch_size = batch_size or settings.STORAGE_EXPIRY_BATCH_SIZE
    backend = backend or storage_backend()
    cutoff = now - UPLOAD_EXPIRY_GRACE
    deleted_total = 0
    after_id = None
    while True:
        rows = WorkloadStorageUpload.objects.filter(expires_at__lte=cutoff).order_by("id")
        if after_id is not None:
            rows = rows.filter(id__gt=after_id)
        rows = list(rows[:batch_size])
        if not rows:
            break
        after_id = rows[-1].id
        for upload in rows:
            if upload.multipart_upload_id and backend.supports_multipart:
                backend.multipart_abort(upload.staging_key, upload_id=upload.multipart_upload_id)
        by_key = {upload.staging_key: upload.id for upload in rows}
        gone = backend.delete_many(by_key)
        WorkloadStorageUpload.objects.filter(id__in=[by_key[k] for k in gone]).delete()
        deleted_total += len(gone)
        if len(rows) < batch_size:
            break
    return deleted_total


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
