"""Where the bytes live: an S3 API (boto3) or the local filesystem (embedded default).

Both hand out URLs the workload uses directly, so no byte passes through a
worker: S3 presigned POST (its policy caps the size) / PUT / multipart part
URLs, or URLs to this app's own views carrying an HMAC-signed, expiring token
naming the upload it is for (``storage/views.py``). Keys here are full backend
keys (``workloads/{id}/...``), already validated; an upload URL points at its
upload's staging key, moved to the object's key when the upload is completed.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.core import signing

from storage.errors import UploadVerificationError

SIGNING_SALT = "storage.signed-url"
_READ_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class UploadTarget:
    """How to upload one object: ``method`` is PUT, POST (form fields first) or MULTIPART (one URL per part)."""

    method: str
    expires_at: datetime
    max_bytes: int
    url: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    upload_id: str | None = None
    parts: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ObjectStat:
    size: int


def _expires_at(expires_in: int) -> datetime:
    return datetime.fromtimestamp(int(time.time()) + expires_in, tz=UTC)


class S3Backend:
    def __init__(self) -> None:
        self.bucket = settings.STORAGE_BUCKET
        self.client = _s3_client(
            settings.STORAGE_ENDPOINT_URL,
            settings.STORAGE_REGION,
            settings.STORAGE_ACCESS_KEY_ID,
            settings.STORAGE_SECRET_ACCESS_KEY,
            settings.STORAGE_ADDRESSING_STYLE,
        )

    supports_multipart = True

    def upload_target(
        self, key: str, *, content_type: str, max_bytes: int, expires_in: int, upload_id: str | None = None
    ) -> UploadTarget:
        """A presigned POST, its policy capping the size at ``max_bytes``; or (R2) a PUT sized at completion."""
        if settings.STORAGE_PRESIGNED_POST:
            post = self.client.generate_presigned_post(
                self.bucket,
                key,
                Fields={"Content-Type": content_type},
                Conditions=[{"Content-Type": content_type}, ["content-length-range", 0, max_bytes]],
                ExpiresIn=expires_in,
            )
            return UploadTarget(
                method="POST",
                url=post["url"],
                fields=post["fields"],
                expires_at=_expires_at(expires_in),
                max_bytes=max_bytes,
            )
        url = self.client.generate_presigned_url(
            "put_object",
            Params={"Bucket": self.bucket, "Key": key, "ContentType": content_type},
            ExpiresIn=expires_in,
        )
        return UploadTarget(
            method="PUT",
            url=url,
            headers={"Content-Type": content_type},
            expires_at=_expires_at(expires_in),
            max_bytes=max_bytes,
        )

    def multipart_begin(
        self, key: str, *, content_type: str, size_bytes: int, part_bytes: int, expires_in: int
    ) -> UploadTarget:
        upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=key, ContentType=content_type)
        parts = []
        for number, offset in enumerate(range(0, size_bytes, part_bytes), 1):
            url = self.client.generate_presigned_url(
                "upload_part",
                Params={"Bucket": self.bucket, "Key": key, "UploadId": upload["UploadId"], "PartNumber": number},
                ExpiresIn=expires_in,
            )
            parts.append(
                {"part_number": number, "url": url, "offset": offset, "size": min(part_bytes, size_bytes - offset)}
            )
        return UploadTarget(
            method="MULTIPART",
            upload_id=upload["UploadId"],
            parts=parts,
            expires_at=_expires_at(expires_in),
            max_bytes=size_bytes,
        )

    def multipart_complete(self, key: str, *, upload_id: str, parts: list[dict[str, Any]]) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": [{"PartNumber": p["part_number"], "ETag": p["etag"]} for p in parts]},
            )
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in ("InvalidPart", "InvalidPartOrder", "EntityTooSmall", "NoSuchUpload", "MalformedXML"):
                raise UploadVerificationError(f"The multipart upload could not be completed: {code}.") from None
            raise

    def multipart_abort(self, key: str, *, upload_id: str) -> None:
        """Drop an unfinished multipart upload and its parts; one completed or aborted already is left alone."""
        from botocore.exceptions import ClientError

        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") not in ("NoSuchUpload", "404"):
                raise

    def move(self, source: str, target: str) -> None:
        """Server-side copy to ``target`` (multipart copy over 5 GiB), then delete ``source``."""
        from boto3.s3.transfer import TransferConfig

        self.client.copy(
            {"Bucket": self.bucket, "Key": source},
            self.bucket,
            target,
            Config=TransferConfig(multipart_threshold=5 * 1024**3, multipart_chunksize=512 * 1024**2),
        )
        self.client.delete_object(Bucket=self.bucket, Key=source)

    def download_url(self, key: str, *, expires_in: int) -> str:
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_in
        )

    def stat(self, key: str) -> ObjectStat | None:
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return ObjectStat(size=head["ContentLength"])

    def sha256(self, key: str) -> str:
        body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        digest = hashlib.sha256()
        for chunk in body.iter_chunks(_READ_CHUNK):
            digest.update(chunk)
        return digest.hexdigest()

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def write(self, key: str, data: bytes, *, content_type: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def delete_many(self, keys: Iterable[str]) -> set[str]:
        """Delete up to 1000 keys in one DeleteObjects call; the keys the backend confirms gone."""
        keys = list(keys)
        if not keys:
            return set()
        answer = self.client.delete_objects(
            Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True}
        )
        failed = {error["Key"] for error in answer.get("Errors", [])}
        return set(keys) - failed

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def list_keys(self, prefix: str) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield item["Key"]


@lru_cache(maxsize=8)
def _s3_client(endpoint_url, region, access_key, secret_key, addressing_style):
    import boto3
    from botocore.config import Config

    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": addressing_style},
        retries={"max_attempts": 3, "mode": "standard"},
        max_pool_connections=20,
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=config,
    )


class FilesystemBackend:
    """Objects as files under MEDIA_ROOT; URLs to this app's signed-URL views."""

    supports_multipart = False

    def __init__(self) -> None:
        self.root = Path(settings.MEDIA_ROOT).resolve()

    def path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise ValueError(f"key {key!r} leaves the storage root")
        return path

    def signed_url(
        self, key: str, *, operation: str, expires_in: int, max_bytes: int = 0, upload_id: str | None = None
    ) -> str:
        payload = {"k": key, "op": operation, "max": max_bytes, "exp": int(time.time()) + expires_in}
        if upload_id is not None:
            payload["u"] = upload_id  # the upload (reservation) the PUT is for: single use
        token = signing.dumps(payload, salt=SIGNING_SALT)
        base = settings.PUBLIC_API_URL.rstrip("/")
        return f"{base}/storage/objects/{quote(key)}?token={quote(token)}"

    def upload_target(
        self, key: str, *, content_type: str, max_bytes: int, expires_in: int, upload_id: str | None = None
    ) -> UploadTarget:
        url = self.signed_url(key, operation="put", expires_in=expires_in, max_bytes=max_bytes, upload_id=upload_id)
        return UploadTarget(
            method="PUT",
            url=url,
            headers={"Content-Type": content_type},
            expires_at=_expires_at(expires_in),
            max_bytes=max_bytes,
        )

    def download_url(self, key: str, *, expires_in: int) -> str:
        return self.signed_url(key, operation="get", expires_in=expires_in)

    def stat(self, key: str) -> ObjectStat | None:
        try:
            return ObjectStat(size=self.path(key).stat().st_size)
        except FileNotFoundError:
            return None

    def sha256(self, key: str) -> str:
        digest = hashlib.sha256()
        with self.path(key).open("rb") as handle:
            while chunk := handle.read(_READ_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    def read(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def write(self, key: str, data: bytes, *, content_type: str) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_bytes(data)
        os.replace(temporary, path)

    def move(self, source: str, target: str) -> None:
        path = self.path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.path(source), path)
        self.delete(source)  # already gone: drops the folders it leaves empty

    def write_stream(self, key: str, chunks: Iterable[bytes], *, max_bytes: int) -> int | None:
        """Write the object from ``chunks``; None (and nothing written) if it is over ``max_bytes``."""
        incoming = self.root / ".incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        temporary = incoming / f"{os.getpid()}-{time.monotonic_ns()}.part"
        size = 0
        try:
            with temporary.open("wb") as handle:
                for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        return None
                    handle.write(chunk)
            path = self.path(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temporary, path)
            return size
        finally:
            temporary.unlink(missing_ok=True)

    def delete_many(self, keys: Iterable[str]) -> set[str]:
        deleted = set()
        for key in keys:
            self.delete(key)
            deleted.add(key)
        return deleted

    def delete(self, key: str) -> None:
        path = self.path(key)
        path.unlink(missing_ok=True)
        # Drop directories left empty, up to the workload's folder.
        parent = path.parent
        while parent != self.root and parent.parent != self.root / "workloads":
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def list_keys(self, prefix: str) -> Iterator[str]:
        base = self.root / prefix
        if not base.is_dir():
            return
        for path in sorted(base.rglob("*")):
            if path.is_file():
                yield path.relative_to(self.root).as_posix()


def storage_backend() -> S3Backend | FilesystemBackend:
    """The configured backend: S3 when STORAGE_BUCKET is set, else the local filesystem."""
    return S3Backend() if settings.STORAGE_BUCKET else FilesystemBackend()


def signed_token_load(token: str) -> dict[str, Any] | None:
    """The payload of an embedded signed URL's token; None when tampered or expired."""
    try:
        payload = signing.loads(token, salt=SIGNING_SALT)
    except signing.BadSignature:
        return None
    if not isinstance(payload, dict) or payload.get("exp", 0) < time.time():
        return None
    return payload
