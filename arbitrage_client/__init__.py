"""A Python client for the compute arbitrage REST API (httpx only; no Django).

    from arbitrage_client import Client

    with Client() as api:  # ARBITRAGE_API_URL, ARBITRAGE_API_KEY
        workload = api.create({"name": "trainer", "requirements": {"vcpu": 4, "memory_gb": 16}})
        api.wait(workload["id"], until={"RUNNING"})
        for line in api.follow(workload["id"]):
            print(line["text"])

The ``arb`` command line (``arbitrage_client.cli``) is built on it: docs/cli.md.
"""

from arbitrage_client.client import DEFAULT_URL, ENDED, KEY_ENV, OPERATIONS, URL_ENV, Client, Operation
from arbitrage_client.errors import (
    ApiError,
    ArbitrageError,
    AuthenticationFailed,
    BadRequest,
    ConfigurationError,
    Conflict,
    ConnectionFailed,
    NotFound,
    PaymentRequired,
    PermissionDenied,
    ServerError,
    Throttled,
    WaitTimeout,
    WorkloadFailed,
)

__all__ = [
    "DEFAULT_URL",
    "ENDED",
    "KEY_ENV",
    "OPERATIONS",
    "URL_ENV",
    "ApiError",
    "ArbitrageError",
    "AuthenticationFailed",
    "BadRequest",
    "Client",
    "ConfigurationError",
    "Conflict",
    "ConnectionFailed",
    "NotFound",
    "Operation",
    "PaymentRequired",
    "PermissionDenied",
    "ServerError",
    "Throttled",
    "WaitTimeout",
    "WorkloadFailed",
]
