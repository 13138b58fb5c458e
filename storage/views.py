"""The embedded backend's signed URLs: PUT stores an object, GET serves it.

``/storage/objects/<full key>?token=...``: the token (HMAC-signed with
SECRET_KEY, storage/backends.py) names the key, the operation, the most bytes an
upload may have and when it expires. A tampered or expired token, or one for
another key or operation, is a 403 and nothing is written.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from arbitrage.api.errors import error_body
from storage.backends import FilesystemBackend, signed_token_load

_CHUNK = 256 * 1024


def _refuse(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse(error_body(status, code, message), status=status)


def _body_chunks(request: HttpRequest) -> Iterator[bytes]:
    while chunk := request.read(_CHUNK):
        yield chunk


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
    declared = request.META.get("CONTENT_LENGTH")
    if declared and declared.isdigit() and int(declared) > payload["max"]:
        return _refuse(413, "too_large", f"The upload is over the {payload['max']} bytes this URL allows.")
    size = backend.write_stream(key, _body_chunks(request), max_bytes=payload["max"])
    if size is None:
        return _refuse(413, "too_large", f"The upload is over the {payload['max']} bytes this URL allows.")
    return HttpResponse(status=200)
