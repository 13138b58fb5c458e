"""AWS errors: every botocore error, normalised into the ``CloudError`` family of ``placement.clouds.base``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
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

PROVIDER = "aws"

#: Throttling and server-side failures: the same call may succeed if retried.
TRANSIENT_CODES = frozenset(
    {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "Unavailable",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
#: The pool has no spot capacity for us now. ``Unsupported`` is EC2's answer for an
#: instance type not offered in that zone, and ``InsufficientFreeAddressesInSubnet``
#: a full subnet: for both, another pool can still work.
CAPACITY_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientCapacity",
        "InsufficientHostCapacity",
        "InsufficientReservedInstanceCapacity",
        "InsufficientFreeAddressesInSubnet",
        "Unsupported",
    }
)
QUOTA_CODES = frozenset(
    {"MaxSpotInstanceCountExceeded", "InstanceLimitExceeded", "VcpuLimitExceeded", "SpotInstanceLimitExceeded"}
)
PRICE_CODES = frozenset({"SpotMaxPriceTooLow"})
NOT_FOUND_CODES = frozenset({"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"})

# Errors raised by botocore itself before or without an answer from AWS.
_PERMANENT_BOTOCORE = (NoCredentialsError, PartialCredentialsError, NoRegionError, ParamValidationError)


def normalise_error(error: Exception, *, context: str = "") -> CloudError:
    """The ``CloudError`` for a botocore error: the kind decides what the workflow does next.

    ``ClientError`` (AWS answered with an error) is classified by its code, then
    by its HTTP status (5xx is transient, any other status permanent). Errors
    botocore raises itself are permanent when they are about configuration
    (credentials, region, invalid parameters) and transient otherwise (connection
    refused or reset, timeouts). ``message`` is AWS's own message (prefixed with
    ``context`` when given), ``code`` its error code or botocore's exception name.
    """
    prefix = f"{context}: " if context else ""
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        code = str(details.get("Code", "") or "")
        message = prefix + str(details.get("Message", "") or code or error)
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        kind: type[CloudError]
        if code in CAPACITY_CODES:
            kind = CapacityError
        elif code in QUOTA_CODES:
            kind = QuotaError
        elif code in PRICE_CODES:
            kind = PriceTooLowError
        elif code in NOT_FOUND_CODES:
            kind = InstanceNotFound
        elif code in TRANSIENT_CODES or status >= 500:
            kind = TransientCloudError
        else:  # InvalidAMIID.*, AuthFailure, UnauthorizedOperation, InvalidParameter*, any other 4xx
            kind = PermanentCloudError
        return kind(message, provider=PROVIDER, code=code)
    code = type(error).__name__
    if isinstance(error, _PERMANENT_BOTOCORE):
        return PermanentCloudError(prefix + str(error), provider=PROVIDER, code=code)
    if isinstance(error, BotoCoreError):  # EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ...
        return TransientCloudError(prefix + str(error), provider=PROVIDER, code=code)
    return PermanentCloudError(prefix + str(error), provider=PROVIDER, code=code)


@contextlib.contextmanager
def normalised(context: str = "") -> Iterator[None]:
    """Run AWS calls, raising any botocore error as its ``CloudError``."""
    try:
        yield
    except (ClientError, BotoCoreError) as error:
        raise normalise_error(error, context=context) from None
