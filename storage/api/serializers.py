"""Request validation and response shapes for the storage API."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import serializers

from arbitrage.api.fields import StrictCharField, StrictIntegerField, StrictSerializer
from storage.backends import UploadTarget
from storage.models import WorkloadCheckpoint, WorkloadStorageObject
from storage.services import MAX_CHECKPOINT_CHUNKS

MAX_OBJECT_BYTES = 5 * 1024**4  # S3's largest object


def _expires_in() -> StrictIntegerField:
    return StrictIntegerField(
        required=False,
        min_value=1,
        max_value=settings.STORAGE_URL_MAX_EXPIRY_SECONDS,
        help_text=f"Seconds the URL is valid (default {settings.STORAGE_URL_EXPIRY_SECONDS}).",
    )


class UploadRequestSerializer(StrictSerializer):
    key = StrictCharField(max_length=1024, trim_whitespace=False, help_text="Below state/, checkpoints/ or artifacts/.")
    content_type = StrictCharField(required=False, max_length=255, default="application/octet-stream")
    size_bytes = StrictIntegerField(
        required=False,
        min_value=0,
        max_value=MAX_OBJECT_BYTES,
        help_text="Declared size: over the multipart threshold (S3) the answer is a multipart upload.",
    )
    expires_in = _expires_in()


class PartSerializer(StrictSerializer):
    part_number = StrictIntegerField(min_value=1, max_value=10_000)
    etag = StrictCharField(max_length=255)


class UploadCompleteSerializer(StrictSerializer):
    key = StrictCharField(max_length=1024, trim_whitespace=False)
    sha256 = StrictCharField(required=False, min_length=64, max_length=64)
    size_bytes = StrictIntegerField(required=False, min_value=0, max_value=MAX_OBJECT_BYTES)
    content_type = StrictCharField(required=False, max_length=255, default="")
    upload_id = StrictCharField(required=False, max_length=1024, help_text="For a multipart upload.")
    parts = PartSerializer(many=True, required=False, help_text="For a multipart upload: each part's ETag.")


class DownloadRequestSerializer(StrictSerializer):
    key = StrictCharField(max_length=1024, trim_whitespace=False)
    expires_in = _expires_in()


class ObjectListQuerySerializer(StrictSerializer):
    prefix = StrictCharField(required=False, max_length=1024, trim_whitespace=False)
    page = serializers.IntegerField(required=False, min_value=1)
    page_size = serializers.IntegerField(required=False, min_value=1)


class ChunkSerializer(StrictSerializer):
    size_bytes = StrictIntegerField(min_value=0, max_value=MAX_OBJECT_BYTES)
    sha256 = StrictCharField(min_length=64, max_length=64)


class CheckpointBeginSerializer(StrictSerializer):
    chunks = serializers.ListField(child=ChunkSerializer(), min_length=1, max_length=MAX_CHECKPOINT_CHUNKS)
    metadata = serializers.DictField(required=False, default=dict)
    expires_in = _expires_in()


class ExpiresInQuerySerializer(StrictSerializer):
    expires_in = serializers.IntegerField(
        required=False, min_value=1, max_value=settings.STORAGE_URL_MAX_EXPIRY_SECONDS
    )


class StorageObjectSerializer(serializers.ModelSerializer):
    key = serializers.CharField(source="object_key")

    class Meta:
        model = WorkloadStorageObject
        fields = ["key", "size_bytes", "checksum", "content_type", "created_at", "expires_at"]
        read_only_fields = fields


class CheckpointSerializer(serializers.ModelSerializer):
    status = serializers.CharField(read_only=True, help_text="PENDING, COMPLETE or CORRUPT.")
    chunk_count = serializers.SerializerMethodField()

    class Meta:
        model = WorkloadCheckpoint
        fields = ["checkpoint_id", "status", "size_bytes", "chunk_count", "created_at", "completed_at", "error"]
        read_only_fields = fields

    def get_chunk_count(self, checkpoint) -> int:
        return len(checkpoint.manifest.get("chunks", []))


def upload_target_data(target: UploadTarget, *, key: str) -> dict[str, Any]:
    return {
        "key": key,
        "method": target.method,
        "url": target.url,
        "fields": target.fields,
        "headers": target.headers,
        "max_bytes": target.max_bytes,
        "upload_id": target.upload_id,
        "parts": target.parts,
        "expires_at": target.expires_at.isoformat(),
    }


def checkpoint_begin_data(begun: dict[str, Any]) -> dict[str, Any]:
    return {
        **CheckpointSerializer(begun["checkpoint"]).data,
        "prefix": begun["prefix"],
        "chunks": [
            {
                "name": c["name"],
                "key": c["key"],
                "size_bytes": c["size_bytes"],
                "sha256": c["sha256"],
                "upload": upload_target_data(c["upload"], key=c["key"]),
            }
            for c in begun["chunks"]
        ],
    }


def checkpoint_latest_data(latest: dict[str, Any]) -> dict[str, Any]:
    return {
        **CheckpointSerializer(latest["checkpoint"]).data,
        "manifest": latest["manifest"],
        "manifest_url": latest["manifest_url"],
        "chunks": latest["chunks"],
        "expires_at": latest["expires_at"].isoformat(),
    }
