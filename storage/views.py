"""The embedded backend's signed URLs: PUT receives an upload, GET serves an object.

``/storage/objects/<full key>?token=...``: the token (HMAC-signed with
SECRET_KEY, storage/backends.py) names the key, the operation, the most bytes an
upload may have, when it expires and, for a PUT, the upload it is for. A
tampered or expired token, or one for another key or operation, is a 403 and
nothing is written. A PUT needs a Content-Length (411 otherwise) and is single
use: the upload's row takes one body (storage/services.py), a second PUT is a
409, as is any PUT once the workload's storage is read-only.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from arbitrage.api.errors import error_body
from arbitrage.errors import DomainError
from storage import services
from storage.backends import FilesystemBackend, signed_token_load

_CHUNK = 256 * 1024


def _refuse(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse(error_body(status, code, message), status=status)


def _body_chunks(request: HttpRequest) -> Iterator[bytes]:
    while chunk := request.read(_CHUNK):
        yield chunk


def _workload_id(key: str) -> str:
    return key.split("/", 2)[1]


@csrf_exempt
@require_http_methods(["GET", "HEAD", "PUT"])
def signed_object(request: HttpRequest, key: str) -> HttpResponse:
    payload = signed_token_load(request.GET.get("token", ""))
    operation = "put" if request.method == "PUT" else "get"
    if payload is None or payload.get("k") != key or payload.get("op") != operation:
        return _refuse(403, "invalid_signature", "The URL's signature is invalid, expired or for another object.")
    backend = FilesystemBackend()
    if operation == "get":
        if backend.stat(key) is None:
            return _refuse(404, "object_not_found", "Object not found")
        return FileResponse(backend.path(key).open("rb"), content_type="application/octet-stream")
    if not payload.get("u") or not key.startswith("workloads/"):
        return _refuse(403, "invalid_signature", "The URL's signature is invalid, expired or for another object.")
    declared = request.META.get("CONTENT_LENGTH", "")
    if not declared.isdigit():  # a chunked body (no Content-Length) would be read as empty
        return _refuse(411, "length_required", "An upload needs a Content-Length header; chunked bodies are refused.")
    try:
        services.storage_upload_receive(
            workload_id=_workload_id(key),
            upload_id=payload["u"],
            staging_key=key,
            declared_bytes=int(declared),
            chunks=_body_chunks(request),
        )
    except DomainError as refused:
        return _refuse(refused.status, refused.code, refused.message)
    return HttpResponse(status=200)
