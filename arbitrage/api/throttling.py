"""The API's rate limits, answered with 429, ``Retry-After`` and the JSON error body.

* **Per credential** (``API_THROTTLE_RATE``): every request made with one API key
  (or one workload's agent token) counts; a generous sustained rate.
* **Failed authentication per source address** (``API_AUTH_FAILURE_RATE``): each
  request whose credentials are refused (a wrong, revoked or malformed key or
  token) counts against the caller's address. Past the limit, every request from
  that address is a 429 until the window ends, whatever key it carries, so a
  guessed key cannot be told from a wrong one by its answer.

A refused credential never reaches the throttles (DRF authenticates first), so the
failure is counted by the exception handler (``auth_failure_record``); the
``AuthFailureThrottle`` refuses an authenticated request from a blocked address.
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from rest_framework.throttling import BaseThrottle

from arbitrage.throttle import WindowCounter, source_address


def _failures() -> WindowCounter:
    return WindowCounter(scope="api-auth-fail", rate=settings.API_AUTH_FAILURE_RATE)


def auth_failure_record(*, request) -> int | None:
    """Count a refused credential from the request's address; the seconds to wait once it is over the limit."""
    failures = _failures()
    if failures.hit(source_address(request)) > failures.limit:
        return failures.retry_after()
    return None


def _credential_identity(request) -> str | None:
    """One identity per API key (its row) or agent token (its text, hashed); None when unauthenticated."""
    credential = request.auth
    if credential is None:
        return None
    primary_key = getattr(credential, "pk", None)
    if primary_key is not None:
        return f"{type(credential).__name__}:{primary_key}"
    return "token:" + hashlib.sha256(str(credential).encode()).hexdigest()


class _CounterThrottle(BaseThrottle):
    _wait: int | None = None

    def wait(self) -> int | None:
        return self._wait


class AuthFailureThrottle(_CounterThrottle):
    """An address over its failed-authentication limit is refused until its window ends."""

    def allow_request(self, request, view) -> bool:
        failures = _failures()
        if failures.count(source_address(request)) >= failures.limit:
            self._wait = failures.retry_after()
            return False
        return True


class CredentialRateThrottle(_CounterThrottle):
    """The sustained rate of one API key or agent token."""

    def allow_request(self, request, view) -> bool:
        identity = _credential_identity(request)
        if identity is None:
            return True
        counter = WindowCounter(scope="api-credential", rate=settings.API_THROTTLE_RATE)
        if counter.hit(identity) > counter.limit:
            self._wait = counter.retry_after()
            return False
        return True
