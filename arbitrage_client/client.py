"""The REST API as typed methods: ``Client().create(...)``, ``.get``, ``.wait``, ``.follow``, ...

It needs only httpx (no Django). Configuration comes from the arguments or the environment:
``ARBITRAGE_API_URL`` (default http://127.0.0.1:8000) and ``ARBITRAGE_API_KEY``.

Retries: a 429 is retried whatever the request (the API refused it before doing anything),
after its ``Retry-After``; a 5xx or a lost answer only when repeating the request cannot
do anything twice (reads, the quote, and a create, which always carries an
``Idempotency-Key``); a connection that was never made is retried always. Backoff doubles
from ``backoff`` seconds, with jitter, up to ``max_backoff``.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import httpx

from arbitrage_client.errors import (
    ApiError,
    ArbitrageError,
    ConfigurationError,
    ConnectionFailed,
    WaitTimeout,
    WorkloadFailed,
    api_error,
)
from arbitrage_client.types import (
    BillingSummary,
    LogLine,
    LogPage,
    Quote,
    QuoteRequest,
    RebalanceRequest,
    RebalanceStarted,
    Requirements,
    Workload,
    WorkloadDetail,
    WorkloadPage,
    WorkloadRequest,
)

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV, KEY_ENV = "ARBITRAGE_API_URL", "ARBITRAGE_API_KEY"
ENDED = frozenset({"TERMINATED", "FAILED"})
RETRIED_STATUSES = frozenset({500, 502, 503, 504})


@dataclass(frozen=True)
class Operation:
    """One call the client makes: what it sends and what it reads (checked against the OpenAPI schema)."""

    method: str
    path: str
    request: type | None = None  # the body's TypedDict
    response: type | None = None  # the answer's TypedDict
    query: tuple[str, ...] = ()
    repeatable: bool = False  # may a 5xx or a lost answer be retried?


OPERATIONS: dict[str, Operation] = {
    "create": Operation("POST", "/api/v1/workloads", WorkloadRequest, Workload, repeatable=True),
    "list": Operation("GET", "/api/v1/workloads", None, WorkloadPage, ("status", "page", "page_size"), True),
    "get": Operation("GET", "/api/v1/workloads/{workload_id}", None, WorkloadDetail, repeatable=True),
    "terminate": Operation("POST", "/api/v1/workloads/{workload_id}/terminate", None, Workload),
    "rebalance": Operation("POST", "/api/v1/workloads/{workload_id}/rebalance", RebalanceRequest, RebalanceStarted),
    "logs": Operation("GET", "/api/v1/workloads/{workload_id}/logs", None, LogPage, ("after", "limit"), True),
    "follow": Operation("GET", "/api/v1/workloads/{workload_id}/logs", None, None, ("after", "follow"), True),
    "quote": Operation("POST", "/api/v1/placement/quote", QuoteRequest, Quote, repeatable=True),
    "usage": Operation("GET", "/api/v1/billing/summary", None, BillingSummary, ("month",), True),
}


class Client:
    """A customer's API client. Every method raises an ``ArbitrageError`` (see ``errors``) on failure."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        stream_timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = (url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise ConfigurationError(f"the API URL must start with http:// or https://: {self.url!r} ({URL_ENV})")
        self.api_key = api_key if api_key is not None else os.environ.get(KEY_ENV, "")
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.stream_timeout = stream_timeout  # the follow stream gets a keep-alive every 15 s
        self._http = httpx.Client(
            base_url=self.url, timeout=timeout, transport=transport, follow_redirects=False, trust_env=False
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- workloads -----------------------------------------------------------------------------------

    def create(self, workload: WorkloadRequest, *, idempotency_key: str | None = None) -> Workload:
        """Store a workload (it starts ``PENDING``). A retry with the same key returns the first answer;
        without a key, one is made up so the client's own retries can never create it twice."""
        key = idempotency_key or f"client-{uuid.uuid4()}"
        return cast(Workload, self._call("create", body=workload, headers={"Idempotency-Key": key}))

    def get(self, workload_id: str) -> WorkloadDetail:
        """One workload with its instances, events, progress, ``on_track`` and ``cost``."""
        return cast(WorkloadDetail, self._call("get", workload_id=workload_id))

    def list(self, *, status: str | None = None, page_size: int = 200) -> list[Workload]:
        """Every workload of the caller (newest first), all pages; ``status`` filters by state."""
        workloads: list[Workload] = []
        page = 1
        while True:
            query: dict[str, Any] = {"page": page, "page_size": page_size}
            if status:
                query["status"] = status
            answer = cast(WorkloadPage, self._call("list", query=query))
            workloads.extend(answer.get("results") or [])
            if not answer.get("next"):
                return workloads
            page += 1

    def wait(
        self,
        workload_id: str,
        until: Iterable[str] = ("RUNNING",),
        *,
        timeout: float = 600.0,
        poll: float = 1.0,
        on_change: Callable[[WorkloadDetail], None] | None = None,
    ) -> WorkloadDetail:
        """Poll until the workload is in one of ``until``; ``on_change`` sees every new state.

        Raises ``WorkloadFailed`` if it ends (FAILED or TERMINATED) in a state not asked for,
        ``WaitTimeout`` after ``timeout`` seconds.
        """
        states = frozenset(until)
        deadline = time.monotonic() + timeout
        seen: str | None = None
        while True:
            detail = self.get(workload_id)
            if detail.get("status") != seen:
                seen = detail.get("status")
                if on_change is not None:
                    on_change(detail)
            if seen in states:
                return detail
            if seen in ENDED:
                raise WorkloadFailed(dict(detail))
            if time.monotonic() >= deadline:
                raise WaitTimeout(workload_id, states, dict(detail), timeout)
            time.sleep(poll)

    def terminate(self, workload_id: str) -> Workload:
        """Terminate a RUNNING workload or cancel one that has not started: it becomes ``STOPPING``.

        Not retried after a 5xx or a lost answer (``Conflict`` with ``current_state`` if it is already stopping).
        """
        return cast(Workload, self._call("terminate", workload_id=workload_id))

    def rebalance(self, workload_id: str, *, min_saving_pct: str | None = None) -> RebalanceStarted:
        """Move a RUNNING workload to a cheaper offer (``Conflict`` ``no_cheaper_offer`` when there is none)."""
        body: RebalanceRequest = {"min_saving_pct": min_saving_pct} if min_saving_pct is not None else {}
        return cast(RebalanceStarted, self._call("rebalance", workload_id=workload_id, body=body))

    # --- logs ----------------------------------------------------------------------------------------

    def logs(self, workload_id: str, *, after: int = 0, limit: int = 500) -> LogPage:
        """One page of the workload's log lines with a position greater than ``after``."""
        query = {"after": after, "limit": limit}
        return cast(LogPage, self._call("logs", workload_id=workload_id, query=query))

    def log_lines(self, workload_id: str, *, after: int = 0) -> Iterator[LogLine]:
        """Every log line there is now, page after page."""
        while True:
            page = self.logs(workload_id, after=after)
            yield from page.get("lines") or []
            after = page.get("next_after", after)
            if not page.get("more"):
                return

    def follow(self, workload_id: str, *, after: int = 0) -> Iterator[LogLine]:
        """The workload's log lines as they come (server-sent events), until the workload has ended.

        A dropped stream is taken up again where it stopped (``after`` the last position seen).
        """
        operation = OPERATIONS["follow"]
        path = operation.path.format(workload_id=workload_id)
        failures = 0
        while True:
            try:
                for event, data in self._events(path, after):
                    failures = 0
                    if event == "line":
                        line = cast(LogLine, json.loads(data))
                        after = max(after, int(line.get("position", after)))
                        yield line
                    elif event == "end":
                        return
            except (ConnectionFailed, ApiError) as error:
                retry = isinstance(error, ConnectionFailed) or _retryable_status(error, repeatable=True)
                if not retry or failures >= self.retries:
                    raise
                self._pause(failures, error if isinstance(error, ApiError) else None)
                failures += 1
            except ValueError:
                raise ArbitrageError(f"GET {path}: the log stream sent an event that is not JSON") from None

    def _events(self, path: str, after: int) -> Iterator[tuple[str, str]]:
        """The (event, data) pairs of one follow stream; ``ConnectionFailed`` when it breaks."""
        headers = {**self._auth(), "Accept": "text/event-stream", "Last-Event-ID": str(after)}
        timeout = httpx.Timeout(self._http.timeout.connect, read=self.stream_timeout)
        params = {"follow": "1", "after": after}
        try:
            with self._http.stream("GET", path, params=params, headers=headers, timeout=timeout) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error(response, "GET", path)
                event, data = "message", []
                for raw in response.iter_lines():
                    if not raw:
                        if data:
                            yield event, "\n".join(data)
                        event, data = "message", []
                    elif raw.startswith(":"):
                        continue
                    else:
                        name, _, value = raw.partition(":")
                        value = value.removeprefix(" ")
                        if name == "event":
                            event = value
                        elif name == "data":
                            data.append(value)
        except httpx.TransportError as error:
            raise ConnectionFailed(self.url, _reason(error)) from None
        # The server closed the stream without its end event: take it up again.
        raise ConnectionFailed(self.url, "the log stream closed before the workload ended")

    # --- placement and billing -----------------------------------------------------------------------

    def quote(self, requirements: Requirements, *, limit: int = 10) -> Quote:
        """The best offers for ``requirements``, ranked by expected cost (``BadRequest`` 422 if none fits)."""
        body: QuoteRequest = {"requirements": requirements, "limit": limit}
        return cast(Quote, self._call("quote", body=body))

    def usage(self, month: str | None = None) -> BillingSummary:
        """The month's spend, on-demand equivalent and saving, in total and per cloud (``month``: YYYY-MM)."""
        return cast(BillingSummary, self._call("usage", query={"month": month} if month else None))

    # --- plumbing ------------------------------------------------------------------------------------

    def _auth(self) -> dict[str, str]:
        if not self.api_key:
            raise ConfigurationError(f"no API key: set {KEY_ENV} (a key looks like ca_...)")
        return {"Authorization": f"Bearer {self.api_key}"}

    def _call(
        self,
        name: str,
        *,
        workload_id: str | None = None,
        query: dict[str, Any] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        operation = OPERATIONS[name]
        path = operation.path.format(workload_id=workload_id) if workload_id is not None else operation.path
        headers = {**self._auth(), "Accept": "application/json", **(headers or {})}
        attempt = 0
        while True:
            try:
                response = self._http.request(operation.method, path, params=query, json=body, headers=headers)
            except httpx.TransportError as error:
                never_sent = isinstance(error, httpx.ConnectError | httpx.ConnectTimeout)
                if not (never_sent or operation.repeatable) or attempt >= self.retries:
                    raise ConnectionFailed(self.url, _reason(error)) from None
                self._pause(attempt, None)
                attempt += 1
                continue
            if response.status_code < 400:
                return _json(response, operation.method, path)
            error = _error(response, operation.method, path)
            if not _retryable_status(error, repeatable=operation.repeatable) or attempt >= self.retries:
                raise error
            if error.retry_after is not None and error.retry_after > self.max_backoff:
                raise error  # asked to wait longer than we would: say so now
            self._pause(attempt, error)
            attempt += 1

    def _pause(self, attempt: int, error: ApiError | None) -> None:
        delay = min(self.backoff * 2**attempt, self.max_backoff) * random.uniform(0.5, 1.0)
        if error is not None and error.retry_after is not None:
            delay = max(delay, error.retry_after)
        time.sleep(delay)


def _retryable_status(error: ApiError, *, repeatable: bool) -> bool:
    return error.status == 429 or (repeatable and error.status in RETRIED_STATUSES)


def _json(response: httpx.Response, method: str, path: str) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise ArbitrageError(
            f"{method} {path}: the API answered {response.status_code} with a body that is not JSON"
        ) from None


def _error(response: httpx.Response, method: str, path: str) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    return api_error(response.status_code, body, method=method, path=path, headers=dict(response.headers))


def _reason(error: httpx.TransportError) -> str:
    if isinstance(error, httpx.TimeoutException):
        return "timed out"
    text = str(error) or type(error).__name__
    for known in ("Connection refused", "Name or service not known", "No route to host", "Connection reset"):
        if known.lower() in text.lower():
            return known.lower()
    return text.splitlines()[0]
