"""One JSON error shape for every 4xx (and the rare 5xx) the API gives.

    {"error": {"status": 400, "code": "invalid", "message": "...",
               "fields": {"requirements.vcpu": ["Ensure this value is ..."]}}}

``fields`` is present only for validation errors and names each bad field by
its dotted path in the request body.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from arbitrage.api.throttling import auth_failure_record
from arbitrage.errors import DomainError

logger = logging.getLogger(__name__)


def error_body(status_code: int, code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"status": status_code, "code": code, "message": message, **extra}}


def _flatten(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """Nested serializer errors as ``{"a.b.0.c": ["message", ...]}``."""
    flat: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            if key == "non_field_errors":
                name = prefix or "non_field_errors"
            else:
                name = f"{prefix}.{key}" if prefix else str(key)
            for sub, messages in _flatten(value, name).items():
                flat.setdefault(sub, []).extend(messages)
    elif isinstance(detail, list):
        if all(not isinstance(item, (dict, list)) for item in detail):
            flat[prefix or "non_field_errors"] = [str(item) for item in detail]
        else:
            for index, item in enumerate(detail):
                if item:
                    flat.update(_flatten(item, f"{prefix}.{index}" if prefix else str(index)))
    else:
        flat[prefix or "non_field_errors"] = [str(detail)]
    return flat


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DomainError):
        return Response(error_body(exc.status, exc.code, exc.message, **exc.extra), status=exc.status)

    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        body = error_body(413, "request_too_large", f"Request body is over the limit of {limit} bytes.")
        return Response(body, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)

    if isinstance(exc, exceptions.AuthenticationFailed) and context.get("request") is not None:
        wait = auth_failure_record(request=context["request"])
        if wait is not None:
            exc = exceptions.Throttled(wait=wait, detail="Too many failed authentications from this address.")

    if isinstance(exc, exceptions.UnsupportedMediaType):
        detail = f"{exc.detail} Send the body as JSON with 'Content-Type: application/json'."
        exc = exceptions.UnsupportedMediaType("", detail=detail)

    response = drf_exception_handler(exc, context)
    if response is None:
        # Unexpected: log it with its traceback, answer with the same shape.
        logger.exception("unhandled error in API view", exc_info=exc)
        body = error_body(500, "server_error", "Internal server error.")
        return Response(body, status=status.HTTP_500_INTERNAL_SERVER_ERROR)

    if isinstance(exc, exceptions.ValidationError):
        fields = _flatten(exc.detail)
        first_field, first_messages = next(iter(fields.items()))
        message = f"{first_field}: {first_messages[0]}"
        response.data = error_body(response.status_code, "invalid", message, fields=fields)
    elif isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else "error"
        response.data = error_body(response.status_code, code, str(exc.detail))
    else:  # Http404 / PermissionDenied from Django
        code = "not_found" if response.status_code == 404 else "permission_denied"
        message = "Not found." if response.status_code == 404 else "Permission denied."
        response.data = error_body(response.status_code, code, message)
    return response


def json_not_found(request, exception=None):
    """JSON 404 under /api/; Django's page elsewhere (admin)."""
    if not request.path.startswith("/api/"):
        return defaults.page_not_found(request, exception)
    return JsonResponse(error_body(404, "not_found", "Not found."), status=404)


def json_server_error(request) -> JsonResponse:
    return JsonResponse(error_body(500, "server_error", "Internal server error."), status=500)


def json_bad_request(request, exception=None) -> JsonResponse:
    return JsonResponse(error_body(400, "bad_request", "Bad request."), status=400)
