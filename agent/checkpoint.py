"""The workload's storage client: checkpoints and objects through the storage API (stdlib only).

It runs on the workload's instance, so it needs nothing but Python. The API
hands out presigned URLs (S3) or signed URLs (embedded); the bytes go straight
to storage. Configuration comes from the environment the provisioning workflow
gives every instance: ``ARBITRAGE_API_URL``, ``WORKLOAD_AGENT_TOKEN`` (the
workload id is read from the token).

    client = StorageClient.from_env()
    client.save_checkpoint(state_bytes, metadata={"step": 1200})
    restored = client.restore_latest()          # bytes, or None when there is none
    client.upload("artifacts/results/out.csv", data, content_type="text/csv")
    data = client.download("artifacts/results/out.csv")
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Sequence
from typing import Any
from urllib import error, request
from urllib.parse import quote

DEFAULT_CHUNK_BYTES = 8 * 1024 * 1024
DEFAULT_TIMEOUT = 60.0


class StorageClientError(Exception):
    """An API call or a storage transfer failed; ``status`` is the HTTP status (0 when none)."""

    def __init__(self, message: str, *, status: int = 0, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class StorageClient:
    def __init__(self, api_url: str, token: str, *, workload_id: str | None = None, timeout: float = DEFAULT_TIMEOUT):
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.workload_id = workload_id or workload_id_from_token(token)
        self.timeout = timeout

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> StorageClient:
        env = os.environ if env is None else env
        api_url, token = env.get("ARBITRAGE_API_URL", ""), env.get("WORKLOAD_AGENT_TOKEN", "")
        if not api_url or not token:
            raise StorageClientError("ARBITRAGE_API_URL and WORKLOAD_AGENT_TOKEN must be set")
        return cls(api_url, token, workload_id=env.get("WORKLOAD_ID") or None)

    # --- objects -----------------------------------------------------------------------

    def upload(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> dict[str, Any]:
        """Upload ``data`` under ``key`` (state/, checkpoints/ or artifacts/...) and record it; the index row."""
        target = self._api("POST", "uploads", {"key": key, "content_type": content_type, "size_bytes": len(data)})
        completion: dict[str, Any] = {"key": key, "sha256": sha256_hex(data), "size_bytes": len(data)}
        if target["method"] == "MULTIPART":
            completion.update(upload_id=target["upload_id"], parts=self._put_parts(target, data))
        else:
            transfer(target, data)
        return self._api("POST", "uploads/complete", completion)

    def download(self, key: str) -> bytes:
        answer = self._api("POST", "downloads", {"key": key})
        return _http("GET", answer["url"], timeout=self.timeout)

    def objects(self, prefix: str = "") -> list[dict[str, Any]]:
        query = f"objects?page_size=200&prefix={quote(prefix)}" if prefix else "objects?page_size=200"
        return self._api("GET", query)["results"]

    # --- checkpoints -----------------------------------------------------------------

    def save_checkpoint(
        self,
        data: bytes | Sequence[bytes],
        *,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Split ``data`` (or take the given chunks), upload every chunk, complete; the checkpoint."""
        chunks = split_chunks(data, chunk_bytes) if isinstance(data, bytes | bytearray) else [bytes(c) for c in data]
        begun = self.begin_checkpoint(chunks, metadata=metadata)
        for chunk, entry in zip(chunks, begun["chunks"], strict=True):
            transfer(entry["upload"], chunk, timeout=self.timeout)
        return self.complete_checkpoint(begun["checkpoint_id"])

    def begin_checkpoint(self, chunks: Sequence[bytes], *, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        manifest = [{"size_bytes": len(c), "sha256": sha256_hex(c)} for c in chunks]
        return self._api("POST", "checkpoints", {"chunks": manifest, "metadata": metadata or {}})

    def complete_checkpoint(self, checkpoint_id: str) -> dict[str, Any]:
        return self._api("POST", f"checkpoints/{checkpoint_id}/complete", None)

    def list_checkpoints(self) -> list[dict[str, Any]]:
        return self._api("GET", "checkpoints?page_size=200")["results"]

    def latest_checkpoint(self) -> dict[str, Any] | None:
        """The newest complete checkpoint (manifest and chunk download URLs), or None."""
        try:
            return self._api("GET", "checkpoints/latest")
        except StorageClientError as failure:
            if failure.status == 404:
                return None
            raise

    def restore_latest(self) -> bytes | None:
        """The newest complete checkpoint's data, every chunk checked against its SHA-256; None if none."""
        latest = self.latest_checkpoint()
        if latest is None:
            return None
        parts = []
        for chunk in latest["chunks"]:
            data = _http("GET", chunk["download_url"], timeout=self.timeout)
            if len(data) != chunk["size_bytes"] or sha256_hex(data) != chunk["sha256"]:
                raise StorageClientError(f"{chunk['name']} of checkpoint {latest['checkpoint_id']} is corrupt")
            parts.append(data)
        return b"".join(parts)

    # --- plumbing ------------------------------------------------------------------------

    def _put_parts(self, target: dict[str, Any], data: bytes) -> list[dict[str, Any]]:
        done = []
        for part in target["parts"]:
            piece = data[part["offset"] : part["offset"] + part["size"]]
            headers = _http_headers("PUT", part["url"], piece, {}, timeout=self.timeout)
            done.append({"part_number": part["part_number"], "etag": headers.get("ETag", "")})
        return done

    def _api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        url = f"{self.api_url}/api/v1/workloads/{self.workload_id}/storage/{path}"
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        raw = _http(method, url, payload, headers, timeout=self.timeout)
        return json.loads(raw) if raw else None


def workload_id_from_token(token: str) -> str:
    """An agent token is ``wat_<workload id>_<signature>``."""
    middle = token.removeprefix("wat_").rpartition("_")[0]
    try:
        return str(uuid.UUID(middle))
    except ValueError:
        raise StorageClientError("WORKLOAD_AGENT_TOKEN is not an agent token") from None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split_chunks(data: bytes, chunk_bytes: int) -> list[bytes]:
    if chunk_bytes < 1:
        raise ValueError("chunk_bytes must be positive")
    return [bytes(data[i : i + chunk_bytes]) for i in range(0, len(data), chunk_bytes)] or [b""]


def transfer(target: dict[str, Any], data: bytes, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Send ``data`` to an upload target from the API: presigned PUT, or POST with its form fields."""
    if target["method"] == "PUT":
        _http("PUT", target["url"], data, dict(target.get("headers") or {}), timeout=timeout)
    elif target["method"] == "POST":
        body, content_type = _form_data(target["fields"], data)
        _http("POST", target["url"], body, {"Content-Type": content_type}, timeout=timeout)
    else:
        raise StorageClientError(f"unsupported upload method {target['method']!r}")


def _form_data(fields: dict[str, str], data: bytes) -> tuple[bytes, str]:
    boundary = f"----agent{uuid.uuid4().hex}"
    lines: list[bytes] = []
    for name, value in fields.items():
        lines += [
            f"--{boundary}".encode(),
            f'Content-Disposition: form-data; name="{name}"'.encode(),
            b"",
            value.encode(),
        ]
    lines += [
        f"--{boundary}".encode(),
        b'Content-Disposition: form-data; name="file"; filename="blob"',
        b"Content-Type: application/octet-stream",
        b"",
        data,
        f"--{boundary}--".encode(),
        b"",
    ]
    return b"\r\n".join(lines), f"multipart/form-data; boundary={boundary}"


def _http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None, *, timeout: float):
    return _send(method, url, body, headers or {}, timeout)[0]


def _http_headers(method: str, url: str, body: bytes | None, headers: dict[str, str], *, timeout: float):
    return _send(method, url, body, headers, timeout)[1]


def _send(method: str, url: str, body: bytes | None, headers: dict[str, str], timeout: float):
    req = request.Request(url, data=body, method=method, headers=headers)
    try:
        with request.urlopen(req, timeout=timeout) as answer:
            return answer.read(), dict(answer.headers)
    except error.HTTPError as failure:
        raw = failure.read()
        try:
            detail = json.loads(raw)
        except ValueError:
            detail = raw.decode("utf-8", "replace")
        message = detail.get("error", {}).get("message") if isinstance(detail, dict) else None
        raise StorageClientError(
            f"{method} {url.split('?')[0]}: HTTP {failure.code}: {message or detail}", status=failure.code, body=detail
        ) from None
    except error.URLError as failure:
        raise StorageClientError(f"{method} {url.split('?')[0]}: {failure.reason}") from None
