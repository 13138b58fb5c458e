"""The customer's side of the demo: plain HTTP with urllib, as any client of the API would."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from demo import DemoFailed


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
    """The REST API as a customer calls it: a Bearer API key, JSON in and out."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def call(self, method: str, path: str, body: Any = None, *, expect: tuple[int, ...] = (200,)) -> Any:
        """The decoded answer; ``DemoFailed`` naming the call when it fails or answers another status."""
        try:
            answer = http(
                method,
                self.base_url + path,
                body=body,
                headers={"Authorization": f"Bearer {self.api_key}"},
                timeout=self.timeout,
            )
        except OSError as error:
            raise DemoFailed(f"{method} {path}: no answer from the API ({_reason(error)})") from None
        if answer.status not in expect:
            raise DemoFailed(f"{method} {path}: {error_message(answer)}")
        return answer.body

    def get(self, path: str, *, expect: tuple[int, ...] = (200,)) -> Any:
        return self.call("GET", path, expect=expect)

    def post(self, path: str, body: Any = None, *, expect: tuple[int, ...] = (200,)) -> Any:
        return self.call("POST", path, body, expect=expect)


def _reason(error: OSError) -> str:
    reason = getattr(error, "reason", None) or error.strerror or error
    return str(reason)
