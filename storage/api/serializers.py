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


class UploadPartSerializer(serializers.Serializer):
    part_number = serializers.IntegerField()
    url = serializers.CharField(help_text="Presigned PUT for this part; its ETag answer goes into the completion.")
    offset = serializers.IntegerField(help_text="Where the part starts in the object.")
    size = serializers.IntegerField()


class UploadTargetSerializer(serializers.Serializer):
    """Where and how to send one object's bytes. The URL takes one upload: ask again to upload again."""

    key = serializers.CharField()
    method = serializers.ChoiceField(
        choices=["PUT", "POST", "MULTIPART"],
        help_text="PUT: send the bytes as the body of a PUT to `url` with `headers` (a Content-Length is required). "
        "POST: a multipart/form-data POST to `url` with every entry of `fields` first and the bytes last as `file` "
        "(S3 presigned POST; its policy caps the size at `max_bytes`). MULTIPART: PUT each of `parts` to its URL, "
        "then complete with `upload_id` and each part's ETag.",
    )
    url = serializers.CharField(allow_null=True, help_text="For PUT and POST.")
    fields = serializers.DictField(
        child=serializers.CharField(), help_text="For POST: the form fields to send before the file."
    )
    headers = serializers.DictField(child=serializers.CharField(), help_text="For PUT: headers to send.")
    max_bytes = serializers.IntegerField(
        help_text="The most bytes the upload may have: reserved from the quota until it is completed or expires."
    )
    upload_id = serializers.CharField(allow_null=True, help_text="For MULTIPART: pass it to uploads/complete.")
    parts = UploadPartSerializer(many=True, help_text="For MULTIPART.")
    expires_at = serializers.DateTimeField(help_text="When the URL stops working and its reservation is released.")


class CheckpointChunkUploadSerializer(serializers.Serializer):
    name = serializers.CharField()
    key = serializers.CharField()
    size_bytes = serializers.IntegerField()
    sha256 = serializers.CharField()
    upload = UploadTargetSerializer()


class CheckpointBeginResponseSerializer(serializers.Serializer):
    checkpoint_id = serializers.CharField()
    status = serializers.CharField()
    size_bytes = serializers.IntegerField()
    chunk_count = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    completed_at = serializers.DateTimeField(allow_null=True)
    error = serializers.CharField()
    prefix = serializers.CharField()
    chunks = CheckpointChunkUploadSerializer(many=True)


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
