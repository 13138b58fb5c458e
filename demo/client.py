"""The customer's side of the demo: the Python client (``arbitrage_client``) for the API, and plain
HTTP with urllib for the workloads' own endpoints, as any caller of them would."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from arbitrage_client import ArbitrageError, Client
from demo import DemoFailed

T = TypeVar("T")


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any  # the decoded JSON, or None when the body was not JSON
    headers: dict[str, str] = field(default_factory=dict)


def http(
    method: str, url: str, *, body: Any = None, headers: dict[str, str] | None = None, timeout: float = 30
) -> Answer:
    """One request; any HTTP status is an answer, only a failure to get one raises ``OSError``."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Answer(response.status, _json(response.read()), dict(response.headers))
    except urllib.error.HTTPError as error:
        with error:
            return Answer(error.code, _json(error.read()), dict(error.headers or {}))


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def error_message(answer: Answer) -> str:
    """The API's one-line error message (``{"error": {"message": ...}}``), or the status."""
    if isinstance(answer.body, dict) and isinstance(answer.body.get("error"), dict):
        return f"{answer.status} {answer.body['error'].get('message', '')}".strip()
    return f"HTTP {answer.status}"


class ApiClient:
    """The REST API as a customer calls it, through ``arbitrage_client``: a failure is ``DemoFailed``."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.client = Client(url=self.base_url, api_key=api_key, timeout=timeout, retries=2)

    def _do(self, what: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except ArbitrageError as error:
            raise DemoFailed(f"{what}: {error}") from None

    def quote(self, requirements: dict[str, Any], *, limit: int) -> dict[str, Any]:
        return self._do("POST /api/v1/placement/quote", lambda: self.client.quote(requirements, limit=limit))

    def create(self, workload: dict[str, Any]) -> dict[str, Any]:
        return self._do("POST /api/v1/workloads", lambda: self.client.create(workload))

    def get(self, workload_id: str) -> dict[str, Any]:
        return self._do(f"GET /api/v1/workloads/{workload_id}", lambda: self.client.get(workload_id))

    def terminate(self, workload_id: str, *, already_stopping_ok: bool = False) -> None:
        try:
            self._do(f"POST /api/v1/workloads/{workload_id}/terminate", lambda: self.client.terminate(workload_id))
        except DemoFailed:
            if not already_stopping_ok:
                raise

    def latest_checkpoint(self, workload_id: str) -> dict[str, Any] | None:
        """The storage API is not in the client: one plain request (404 while there is none)."""
        path = f"/api/v1/workloads/{workload_id}/storage/checkpoints/latest"
        try:
            answer = http("GET", self.base_url + path, headers={"Authorization": f"Bearer {self.api_key}"})
        except OSError as error:
            raise DemoFailed(f"GET {path}: no answer from the API ({_reason(error)})") from None
        if answer.status not in (200, 404):
            raise DemoFailed(f"GET {path}: {error_message(answer)}")
        return answer.body if answer.status == 200 and isinstance(answer.body, dict) else None


def _reason(error: OSError) -> str:
    reason = getattr(error, "reason", None) or error.strerror or error
    return str(reason)
