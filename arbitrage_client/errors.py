"""What the client raises: every failure is an ``ArbitrageError`` with a one-line ``str``."""

from __future__ import annotations

from typing import Any


class ArbitrageError(Exception):
    """Anything the client could not do; ``str(error)`` is one line fit to show a person."""


class ConfigurationError(ArbitrageError):
    """The client is not set up to make a call (no API key, a bad URL)."""


class ConnectionFailed(ArbitrageError):
    """No answer from the API: refused, timed out, or cut off (after the retries)."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot reach the API at {url} ({reason})")


class WaitTimeout(ArbitrageError):
    """``Client.wait`` gave up before the workload reached one of the states asked for."""

    def __init__(self, workload_id: str, states: frozenset[str], last: dict[str, Any], timeout: float) -> None:
        self.workload_id = workload_id
        self.states = states
        self.last = last
        super().__init__(
            f"workload {workload_id} did not reach {' or '.join(sorted(states))} within {timeout:g} s "
            f"(it is {last.get('status')})"
        )


class WorkloadFailed(ArbitrageError):
    """``Client.wait`` saw the workload end (FAILED, or TERMINATED when that was not asked for)."""

    def __init__(self, workload: dict[str, Any]) -> None:
        self.workload = workload
        reason = workload.get("failure_reason") or workload.get("termination_reason") or "no reason given"
        super().__init__(f"workload {workload.get('id')} is {workload.get('status')}: {reason}")


class ApiError(ArbitrageError):
    """The API answered with an error: its status and its error body.

    The body has one shape (``{"error": {"status", "code", "message", "fields"?, ...}}``);
    ``fields`` maps each bad field (dotted path) to its messages, and ``extra`` holds a view's
    own figures (``current_state`` of a 409, ``best_offer`` of a refused rebalance, ...).
    """

    def __init__(
        self,
        status: int,
        body: Any,
        *,
        method: str = "",
        path: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.method = method
        self.path = path
        self.headers = dict(headers or {})
        detail = body.get("error") if isinstance(body, dict) and isinstance(body.get("error"), dict) else {}
        self.code: str = str(detail.get("code") or f"http_{status}")
        self.message: str = str(detail.get("message") or f"HTTP {status}")
        self.fields: dict[str, list[str]] = dict(detail.get("fields") or {})
        self.extra: dict[str, Any] = {
            key: value for key, value in detail.items() if key not in ("status", "code", "message", "fields")
        }
        super().__init__(f"{status} {self.code}: {self.message}")

    @property
    def retry_after(self) -> float | None:
        raw = self.headers.get("retry-after")
        try:
            return max(float(raw), 0.0) if raw is not None else None
        except ValueError:
            return None


class BadRequest(ApiError):
    """400 or 422: the request was refused as it stands (``fields`` names what is wrong)."""


class AuthenticationFailed(ApiError):
    """401: a missing, invalid or revoked API key."""


class PaymentRequired(ApiError):
    """402: the monthly budget is reached."""


class PermissionDenied(ApiError):
    """403."""


class NotFound(ApiError):
    """404: no such object for this customer (or a page past the end)."""


class Conflict(ApiError):
    """409: the state change is refused (``extra["current_state"]``)."""


class Throttled(ApiError):
    """429: too many requests (``retry_after`` seconds)."""


class ServerError(ApiError):
    """5xx."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: AuthenticationFailed,
    402: PaymentRequired,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    422: BadRequest,
    429: Throttled,
}


def api_error(status: int, body: Any, **kwargs: Any) -> ApiError:
    """The ``ApiError`` subclass for ``status``."""
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    return cls(status, body, **kwargs)
