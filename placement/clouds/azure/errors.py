"""Azure errors: what ARM and the Azure SDK raise, normalised into the ``CloudError`` family.

ARM says what went wrong in ``error.code`` (and sometimes in the codes of ``error.details``):
the code decides the kind first, the HTTP status after it. The same codes come back in a
failed async operation's ``error`` and in a failed VM's instance view status.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from placement.clouds.base import (
    CapacityError,
    CloudError,
    InstanceNotFound,
    PermanentCloudError,
    PriceTooLowError,
    QuotaError,
    TransientCloudError,
)

PROVIDER = "azure"

# --- error codes (ARM's ``error.code``, also an async operation's and an instance view status's) ---------------
CAPACITY_CODES = frozenset(
    {
        "SkuNotAvailable",
        "AllocationFailed",
        "ZonalAllocationFailed",
        "OverconstrainedAllocationRequest",
        "OverconstrainedZonalAllocationRequest",
    }
)
QUOTA_CODES = frozenset({"QuotaExceeded"})
#: "Unable to perform operation ... since the provided max price '<p> USD' is lower than the current spot price".
PRICE_TOO_LOW_CODES = frozenset({"SpotPriceGreaterThanProvidedMaxPrice"})
NOT_FOUND_CODES = frozenset({"ResourceNotFound", "NotFound"})
TRANSIENT_CODES = frozenset(
    {"TooManyRequests", "RetryableError", "InternalServerError", "ServiceUnavailable", "GatewayTimeout"}
)
PERMANENT_CODES = frozenset(
    {
        "InvalidParameter",
        "ImageNotFound",
        "PlatformImageNotFound",
        "InvalidTemplate",
        "AuthorizationFailed",
        "LinkedAuthorizationFailed",
        "AuthenticationFailed",
        "InvalidAuthenticationToken",
        "InvalidAuthenticationTokenTenant",
        "ExpiredAuthenticationToken",
        "ResourceGroupNotFound",
        "SubscriptionNotFound",
        "InvalidSubscriptionId",
        "InvalidResourceType",
        "MaxPriceValueInvalid",
        "AzureSpotFeatureNotEnabledForSubscription",
    }
)
_CLASSES: tuple[tuple[frozenset[str], type[CloudError]], ...] = (
    (CAPACITY_CODES, CapacityError),
    (QUOTA_CODES, QuotaError),
    (PRICE_TOO_LOW_CODES, PriceTooLowError),
    (NOT_FOUND_CODES, InstanceNotFound),
    (TRANSIENT_CODES, TransientCloudError),
    (PERMANENT_CODES, PermanentCloudError),
)


def _class_of_code(code: str, message: str) -> type[CloudError] | None:
    folded = code.casefold()
    if folded == "operationnotallowed" and "quota" in message.casefold():
        return QuotaError  # "... results in exceeding approved LowPriorityCores quota"
    for codes, cls in _CLASSES:
        if folded in {known.casefold() for known in codes}:
            return cls
    return None


def classify(
    code: str,
    message: str,
    *,
    status: int | None = None,
    details: Sequence[tuple[str, str]] = (),
    finished_operation: bool = False,
) -> CloudError:
    """The normalised error for an ARM error (``code``, ``message``, HTTP ``status`` when there was an answer).

    The code decides first (a 404 ``ImageNotFound`` is a bad request, not a missing
    instance), then the codes of the error's ``details`` (ARM wraps some errors), then
    the HTTP status. ``finished_operation``: the error is a finished async operation's,
    which no retry of the status check can change, so what is not a reason to try the
    next candidate is permanent.
    """
    cls = _class_of_code(code, message)
    if cls is None:
        for detail_code, detail_message in details:
            cls = _class_of_code(detail_code, detail_message)
            if cls is not None:
                code, message = detail_code, detail_message or message
                break
    if cls is None:
        if finished_operation:
            cls = PermanentCloudError
        elif status == 404:
            cls = InstanceNotFound
        elif status is None or status in (408, 429) or status >= 500:
            cls = TransientCloudError
        elif status >= 400:
            cls = PermanentCloudError
        else:
            cls = TransientCloudError  # a 2xx answer we could not read
    elif finished_operation and cls is TransientCloudError:
        cls = PermanentCloudError
    return cls(message or code or f"HTTP {status}", provider=PROVIDER, code=code or (str(status) if status else ""))


def _error_parts(error: HttpResponseError) -> tuple[str, str, list[tuple[str, str]]]:
    """(code, message, details) of an ARM error answer: ``{"error": {"code", "message", "details"}}``."""
    odata = error.error
    if odata is not None and (odata.code or odata.message):
        details = [(detail.code or "", detail.message or "") for detail in (odata.details or [])]
        return odata.code or "", odata.message or "", details
    body = json_of(error.response) if error.response is not None else {}
    inner = body.get("error") if isinstance(body.get("error"), dict) else body
    code, message = str(inner.get("code") or ""), str(inner.get("message") or "")
    return code, message or (error.reason or "") or str(error.message or ""), []


def json_of(response: Any) -> dict[str, Any]:
    try:
        document = json.loads(response.text())
    except (ValueError, TypeError, AttributeError):
        return {}
    return document if isinstance(document, dict) else {}


def cloud_error(error: BaseException) -> CloudError:
    """One normalised ``CloudError`` for anything the Azure SDK raises.

    * an HTTP answer (``HttpResponseError`` and its subclasses): by ARM code, then status;
    * no answer (``ServiceRequestError``: could not connect; ``ServiceResponseError``:
      connection dropped or timed out): ``TransientCloudError``;
    * the credential could not get a token (``ClientAuthenticationError`` with no
      answer): ``PermanentCloudError`` ``AuthenticationFailed``.
    """
    if isinstance(error, CloudError):
        return error
    if isinstance(error, HttpResponseError) and error.status_code is not None:
        code, message, details = _error_parts(error)
        return classify(code, message, status=error.status_code, details=details)
    if isinstance(error, ClientAuthenticationError):
        return PermanentCloudError(str(error.message or error), provider=PROVIDER, code="AuthenticationFailed")
    if isinstance(error, ServiceRequestError | ServiceResponseError):
        return TransientCloudError(str(error.message or error), provider=PROVIDER, code=type(error).__name__)
    if isinstance(error, AzureError):
        return TransientCloudError(str(error.message or error), provider=PROVIDER, code=type(error).__name__)
    return PermanentCloudError(f"{type(error).__name__}: {error}", provider=PROVIDER)


def operation_error(body: Mapping[str, Any]) -> CloudError:
    """The normalised error of a failed async operation: ``{"status": "Failed", "error": {...}}``."""
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    code, message = str(error.get("code") or ""), str(error.get("message") or "")
    details = [
        (str(detail.get("code") or ""), str(detail.get("message") or ""))
        for detail in error.get("details") or []
        if isinstance(detail, dict)
    ]
    status = str(body.get("status") or "Failed")
    if not code and not message:
        code, message = status, f"the operation ended {status}"
    return classify(code, message, details=details, finished_operation=True)


def provisioning_error(status: Mapping[str, Any] | None) -> CloudError:
    """The error of a VM whose provisioning failed: instance view ``ProvisioningState/failed/<Code>``."""
    if status is None:
        return PermanentCloudError("VM provisioning failed", provider=PROVIDER, code="ProvisioningFailed")
    code = str(status.get("code") or "").split("/", 2)
    reason = code[2] if len(code) > 2 else "ProvisioningFailed"
    message = str(status.get("message") or status.get("displayStatus") or "Provisioning failed")
    return classify(reason, message, finished_operation=True)
