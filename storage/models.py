"""Per-workload storage configuration and the object index (docs/architecture.md §9).

Table and column names are the source design's (``workload_storage_config``,
``workload_storage_objects``). The index is the source of truth for usage; an
upload URL reserves its bytes (``workload_storage_uploads``) until it is
completed or expires.
"""

from __future__ import annotations

import uuid

from django.db import models

GIB = 1024**3


class WorkloadStorageConfig(models.Model):
    workload = models.OneToOneField(
        "workloads.Workload", on_delete=models.CASCADE, primary_key=True, related_name="storage_config"
    )
    storage_enabled = models.BooleanField(default=True)
    storage_quota_bytes = models.BigIntegerField(default=10 * GIB)
    retention_days = models.PositiveIntegerField(default=30)
    read_only_since = models.DateTimeField(
        null=True, blank=True, help_text="When the workload ended: no more uploads from then on."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "workload_storage_config"

    def __str__(self) -> str:
        return f"storage of {self.workload_id}"


class WorkloadStorageObject(models.Model):
    workload = models.ForeignKey("workloads.Workload", on_delete=models.CASCADE, related_name="storage_objects")
    object_key = models.CharField(max_length=1024, help_text="Key below workloads/{id}/.")
    size_bytes = models.BigIntegerField()
    checksum = models.CharField(max_length=128, blank=True)
    content_type = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        db_table = "workload_storage_objects"
        constraints = [models.UniqueConstraint(fields=["workload", "object_key"], name="storage_object_key_unique")]

    def __str__(self) -> str:
        return f"workloads/{self.workload_id}/{self.object_key}"


class CheckpointStatus(models.TextChoices):
    PENDING = "PENDING", "pending"  # begun, chunks being uploaded
    COMPLETE = "COMPLETE", "complete"  # every chunk verified against the manifest
    CORRUPT = "CORRUPT", "corrupt"  # failed verification on restore: never "latest" again


class WorkloadCheckpoint(models.Model):
    """One checkpoint: ``checkpoints/{checkpoint_id}/manifest.json`` plus its ``data/chunk-NNN.bin``."""

    workload = models.ForeignKey("workloads.Workload", on_delete=models.CASCADE, related_name="storage_checkpoints")
    checkpoint_id = models.CharField(max_length=32, help_text="The timestamp segment of its keys.")
    status = models.CharField(max_length=16, choices=CheckpointStatus.choices, default=CheckpointStatus.PENDING)
    manifest = models.JSONField(help_text="Each chunk's name, size and SHA-256.")
    size_bytes = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        db_table = "workload_storage_checkpoints"
        constraints = [models.UniqueConstraint(fields=["workload", "checkpoint_id"], name="storage_checkpoint_unique")]
        indexes = [models.Index(fields=["workload", "status", "-checkpoint_id"], name="storage_ckpt_latest_idx")]

    def __str__(self) -> str:
        return f"workloads/{self.workload_id}/checkpoints/{self.checkpoint_id}"


class UploadStatus(models.TextChoices):
    PENDING = "PENDING", "pending"  # URL issued, nothing received (on S3: nothing completed)
    RECEIVING = "RECEIVING", "receiving"  # embedded: its one PUT is streaming in
    RECEIVED = "RECEIVED", "received"  # embedded: its bytes arrived; the URL is used up
    COMPLETING = "COMPLETING", "completing"  # being verified and moved into place
    COMPLETED = "COMPLETED", "completed"  # recorded in the index: the object counts from now on
    REFUSED = "REFUSED", "refused"  # refused at completion (mismatch, quota, read-only): its bytes deleted


# The states whose bytes still count against the quota as a reservation.
UPLOAD_OPEN_STATUSES = (UploadStatus.PENDING, UploadStatus.RECEIVING, UploadStatus.RECEIVED, UploadStatus.COMPLETING)


class WorkloadStorageUpload(models.Model):
    """One issued upload URL: single use, its ``reserved_bytes`` counted against the quota while it is open.

    The bytes go to a staging key of its own (``workloads/{id}/.uploads/{upload id}``)
    and move to ``object_key`` only when the upload is completed, so nothing the
    index describes changes under it. The row stays until its URL has expired,
    then the expiry sweep deletes it with whatever is left under its staging key.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workload = models.ForeignKey("workloads.Workload", on_delete=models.CASCADE, related_name="storage_uploads")
    object_key = models.CharField(max_length=1024, help_text="Key below workloads/{id}/ it becomes when completed.")
    reserved_bytes = models.BigIntegerField(help_text="The most bytes the URL accepts, reserved from the quota.")
    status = models.CharField(max_length=16, choices=UploadStatus.choices, default=UploadStatus.PENDING)
    multipart_upload_id = models.CharField(max_length=1024, blank=True)
    checkpoint = models.ForeignKey(
        WorkloadCheckpoint, null=True, blank=True, on_delete=models.SET_NULL, related_name="uploads"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True, help_text="When its URL stops working.")

    class Meta:
        db_table = "workload_storage_uploads"
        indexes = [models.Index(fields=["workload", "object_key", "status"], name="storage_upload_key_idx")]

    def __str__(self) -> str:
        return f"upload {self.id} of workloads/{self.workload_id}/{self.object_key}"

    @property
    def staging_key(self) -> str:
        return f"workloads/{self.workload_id}/.uploads/{self.id}"
