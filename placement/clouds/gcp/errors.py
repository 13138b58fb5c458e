"""GCP errors: what Compute Engine and the SDK raise, normalised into the ``CloudError`` family."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import requests
from google.api_core import exceptions as google_exceptions
from google.auth import exceptions as auth_exceptions

from placement.clouds.base import (
    CapacityError,
    CloudError,
    InstanceNotFound,
    PermanentCloudError,
    QuotaError,
    TransientCloudError,
)

if TYPE_CHECKING:  # the SDK takes seconds to import: it loads when a GcpCloud first calls the API
    from google.cloud import compute_v1

# Error codes, as operation errors (``error.errors[].code``) and HTTP errors (``error.errors[].reason``) say them.
CAPACITY_CODES = frozenset(
    {
        "ZONE_RESOURCE_POOL_EXHAUSTED",
        "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
        "RESOURCE_POOL_EXHAUSTED",
        "REGION_RESOURCE_POOL_EXHAUSTED",
        "resourceExhausted",
    }
)
CAPACITY_MESSAGES = ("does not have enough resources", "resource pool exhausted")
QUOTA_CODES = frozenset({"QUOTA_EXCEEDED", "quotaExceeded"})
TRANSIENT_CODES = frozenset(
    {
        "rateLimitExceeded",
        "userRateLimitExceeded",
        "RATE_LIMIT_EXCEEDED",
        "RESOURCE_OPERATION_RATE_EXCEEDED",
        "backendError",
        "internalError",
        "INTERNAL_ERROR",
        "resourceNotReady",
        "RESOURCE_NOT_READY",
    }
)
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
NOT_FOUND_CODES = frozenset({"notFound", "RESOURCE_NOT_FOUND"})


def cloud_error(
    code: str, message: str, *, status: int | None = None, not_found: type[CloudError] = InstanceNotFound
) -> CloudError:
    """The normalised error for what Compute Engine answered: an HTTP error's reason, or an operation's error code.

    ``status`` is the HTTP status when there is one; ``not_found`` the class for a 404 (an instance
    call's 404 is ``InstanceNotFound``; a create's is a missing image, network or machine type).
    """
    kwargs = {"provider": "gcp", "code": code or (str(status) if status else "")}
    lowered = message.lower()
    if code in CAPACITY_CODES or any(words in lowered for words in CAPACITY_MESSAGES):
        return CapacityError(message, **kwargs)
    if code in TRANSIENT_CODES:  # rate limits are "quota" errors too, but only for a moment
        return TransientCloudError(message, **kwargs)
    if code in QUOTA_CODES or (status == 403 and re.search(r"\bquota\b.*\bexceeded\b", lowered)):
        return QuotaError(message, **kwargs)
    if status in TRANSIENT_STATUSES:
        return TransientCloudError(message, **kwargs)
    if status == 404 or code in NOT_FOUND_CODES:
        return not_found(message, **kwargs)
    return PermanentCloudError(message, **kwargs)


#: What the SDK raises for the cloud's answers and for auth or network failures (anything else is a bug).
SDK_ERRORS = (google_exceptions.GoogleAPIError, auth_exceptions.GoogleAuthError, requests.RequestException)


def error_from_exception(exc: Exception, *, not_found: type[CloudError] = InstanceNotFound) -> CloudError:
    """Normalise what the SDK raised: an API error, an authentication failure, a network failure."""
    if isinstance(exc, CloudError):
        return exc
    if isinstance(exc, google_exceptions.GoogleAPICallError):
        message = _api_message(exc)
        reasons = [item.get("reason", "") for item in exc.errors if isinstance(item, dict)]
        code = next((reason for reason in reasons if reason), "") or (exc.reason or "")
        return cloud_error(code, message, status=exc.code, not_found=not_found)
    if isinstance(exc, google_exceptions.RetryError | auth_exceptions.TransportError | requests.RequestException):
        return TransientCloudError(f"{type(exc).__name__}: {exc}", provider="gcp")
    if isinstance(exc, auth_exceptions.GoogleAuthError) and getattr(exc, "retryable", False):
        return TransientCloudError(f"{type(exc).__name__}: {exc}", provider="gcp")
    return PermanentCloudError(f"{type(exc).__name__}: {exc}", provider="gcp")


def _api_message(exc: google_exceptions.GoogleAPICallError) -> str:
    """The cloud's own message, without the "POST https://...: " the SDK puts before it."""
    response = getattr(exc, "response", None)
    try:
        message = response.json()["error"]["message"]
    except Exception:  # noqa: BLE001 - not a Google error body: keep the SDK's words
        message = None
    return message if isinstance(message, str) and message else str(exc.message)


def operation_error(operation: compute_v1.Operation) -> CloudError:
    """The normalised error of a failed zone operation (its first error item decides the class).

    The insert is over: polling its operation again cannot succeed, so what would be transient
    for an API call (an internal error) is permanent here; only a new create could do better.
    """
    items = list(operation.error.errors)
    code = items[0].code if items else ""
    message = "; ".join(item.message for item in items if item.message) or operation.http_error_message
    error = cloud_error(
        code,
        message or f"operation {operation.name} failed",
        status=operation.http_error_status_code or None,
        not_found=PermanentCloudError,
    )
    if isinstance(error, TransientCloudError):
        error = PermanentCloudError(error.message, provider="gcp", code=error.code)
    return error
