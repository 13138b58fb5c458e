"""The gateway's ASGI application: resolve the workload, check access, proxy.

Answers follow the workload's state (docs/architecture.md §10):

* RUNNING: proxied to the routed instance;
* PENDING / PROVISIONING: 503 with Retry-After;
* INTERRUPTED / UNHEALTHY (a migration under way): the request waits, at most
  ``GATEWAY_MIGRATION_WAIT_SECONDS``, for the workload to run again with its new
  endpoint and is then proxied, else 503 with Retry-After;
* STOPPING / TERMINATED / FAILED: 410;
* unknown workload or a host that names none: 404;
* the agent's control endpoints (``/_agent/...``): 404, never proxied;
* upstream refusing or failing: 502, upstream timing out: 504.

Every answer the gateway makes itself is a short JSON body. No credential of
ours is forwarded to an instance, whatever the workload's access mode
(``gateway/access.py``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from uuid import UUID

import httpx
from django.conf import settings

from arbitrage.logs import log_context_bind
from gateway.access import AccessControl, agent_only_path, credential_of, without_credentials
from gateway.counters import PUBLISH_SECONDS, CountersPublisher, counters
from gateway.resolver import Route, RouteResolver
from workloads.models import WorkloadStatus as S

logger = logging.getLogger("gateway")
access_log = logging.getLogger("gateway.access")
# httpx logs every upstream request at INFO; the gateway's access line already says it all.
logging.getLogger("httpx").setLevel(logging.WARNING)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Set by the gateway itself on the way in (X-Forwarded-For is extended, not replaced).
SET_BY_GATEWAY = frozenset({b"host", b"x-forwarded-proto", b"x-forwarded-host"})
STARTING = frozenset({S.PENDING, S.PROVISIONING})
MIGRATING = frozenset({S.INTERRUPTED, S.UNHEALTHY})
GONE = frozenset({S.STOPPING, S.TERMINATED, S.FAILED})
# How often a waiting request looks at the KV again.
MIGRATION_POLL_SECONDS = 0.1
PATH_PREFIX = "/w/"
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})


class ClientDisconnected(Exception):
    pass


class ResponseBroken(Exception):
    """The upstream failed while its response was being streamed to the client."""


class GatewayApp:
    def __init__(self) -> None:
        self.domain_suffix = f".workloads.{settings.WORKLOAD_DOMAIN}".lower()
        self.migration_wait = settings.GATEWAY_MIGRATION_WAIT_SECONDS
        self.retry_after = str(settings.GATEWAY_RETRY_AFTER_SECONDS).encode()
        self.resolver = RouteResolver(cache_seconds=settings.GATEWAY_ROUTE_CACHE_SECONDS)
        self.access = AccessControl()
        self._client: httpx.AsyncClient | None = None
        # Copies the counters to the shared KV for the web process's /metrics (counters.py).
        self.publisher = CountersPublisher(counters)
        self._publishing: asyncio.Task | None = None
        self._publishing_started = False

    # --- ASGI ---------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.lifespan(receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1003})

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.client()
                self.start_publishing()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop_publishing()
                if self._client is not None:
                    await self._client.aclose()
                    self._client = None
                await send({"type": "lifespan.shutdown.complete"})
                return

    def client(self) -> httpx.AsyncClient:
        """The pooled upstream client, shared by every request of this process."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(
                    settings.GATEWAY_UPSTREAM_TIMEOUT_SECONDS,
                    connect=settings.GATEWAY_CONNECT_TIMEOUT_SECONDS,
                    pool=settings.GATEWAY_CONNECT_TIMEOUT_SECONDS,
                ),
                limits=httpx.Limits(
                    max_connections=settings.GATEWAY_MAX_CONNECTIONS,
                    max_keepalive_connections=settings.GATEWAY_MAX_KEEPALIVE_CONNECTIONS,
                ),
                follow_redirects=False,
                trust_env=False,
            )
        return self._client

    # --- counters to the KV, off the request path ---------------------------

    def start_publishing(self) -> None:
        if not self._publishing_started:
            self._publishing_started = True
            self._publishing = asyncio.get_running_loop().create_task(self._publish_every_second())

    async def stop_publishing(self) -> None:
        if self._publishing is not None:
            self._publishing.cancel()
            self._publishing = None
            await self._publish(force=True)

    async def _publish_every_second(self) -> None:
        while True:
            await self._publish()
            await asyncio.sleep(PUBLISH_SECONDS)

    async def _publish(self, *, force: bool = False) -> None:
        try:
            await asyncio.to_thread(self.publisher.publish, force=force)
        except Exception:
            logger.exception("gateway: could not publish the counters to the KV")

    # --- one request --------------------------------------------------------

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._publishing_started:  # run without the lifespan protocol
            self.start_publishing()
        started = time.monotonic()
        log: dict[str, Any] = {"workload": "-", "upstream_ms": "-", "instance": "-"}
        status = 500
        try:
            status = await self.handle(scope, receive, send, log)
        except (ClientDisconnected, OSError):
            status = 499
        except ResponseBroken as exc:
            # The upstream failed after the response had started: the client sees it cut short.
            logger.warning("gateway: response of %s broke off: %r", log["workload"], exc.__cause__)
            counters.upstream_errors["response_broken"] += 1
            status = log.get("status", 502)
        counters.response(status)
        access_log.info(
            "workload=%s method=%s path=%s status=%s upstream=%s upstream_ms=%s total_ms=%.1f",
            log["workload"],
            scope["method"],
            scope["path"],
            status,
            log["instance"],
            log["upstream_ms"],
            (time.monotonic() - started) * 1000,
        )

    async def handle(self, scope: Scope, receive: Receive, send: Send, log: dict[str, Any]) -> int:
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        host = _header(headers, b"host").decode("latin-1").strip().lower()
        target = self.target(host, scope)
        if target is None:
            if scope["path"] == "/healthz" and not host.endswith(self.domain_suffix):
                return await respond(send, 200, {"status": "ok"})
            if scope["path"] == "/_gateway/counters" and not host.endswith(self.domain_suffix):
                return await respond(send, 200, counters.snapshot())
            return await respond(send, 404, {"error": "No workload at this address."})
        workload_id, raw_path = target
        log["workload"] = str(workload_id)
        log_context_bind(workload_id=workload_id)  # this request's task only
        if agent_only_path(raw_path):
            # The control plane calls the agent at its instance's address, never through here.
            return await respond(send, 404, {"error": "No such path on a workload's endpoint."})

        route = await self.resolver.resolve(workload_id)
        if route.meta is None or route.status is None:
            return await respond(send, 404, {"error": "No such workload.", "workload_id": str(workload_id)})
        credential_header, credential = credential_of(headers)
        if not await self.access.admits(workload_id=workload_id, meta=route.meta, credential=credential):
            counters.unauthorized_total += 1
            return await respond(
                send,
                401,
                {"error": "This workload is private: send the customer's API key or its access token."},
                extra=[(b"www-authenticate", b'Bearer realm="workload"')],
            )
        admitted_by = credential_header if route.meta.private else None

        body = RequestBody(receive, headers)
        for attempt in range(2):
            route, answer = await self.runnable(route)
            if answer is not None:
                return await answer(send)
            try:
                return await self.proxy(scope, send, route, raw_path, body, admitted_by, log)
            except (httpx.ConnectError, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError) as exc:
                if body.disconnected:
                    raise ClientDisconnected from None
                # The instance went away before answering. If the route moved meanwhile (a
                # migration) and the request can be sent again, follow the route once: a refused
                # connection received nothing; a GET without a body can be repeated.
                resendable = isinstance(exc, httpx.ConnectError) or (scope["method"] in IDEMPOTENT and not body.started)
                if attempt == 0 and resendable:
                    self.resolver.forget(workload_id)
                    fresh = await self.resolver.resolve(workload_id, max_age=0)
                    if fresh.status != S.RUNNING or fresh.endpoint != route.endpoint:
                        route = fresh
                        continue
                counters.upstream_errors[type(exc).__name__] += 1
                return await respond(send, 502, {"error": "The workload's instance did not answer."})
            except httpx.TimeoutException:
                counters.upstream_errors["timeout"] += 1
                return await respond(send, 504, {"error": "The workload's instance did not answer in time."})
            except httpx.TransportError as exc:
                if body.disconnected:
                    raise ClientDisconnected from None
                counters.upstream_errors[type(exc).__name__] += 1
                return await respond(send, 502, {"error": "The workload's instance failed to answer."})
        return await respond(send, 502, {"error": "The workload's instance refused the connection."})

    def target(self, host: str, scope: Scope) -> tuple[UUID, bytes] | None:
        """(workload id, upstream path) named by the request's host or its /w/{id}/ path, or None."""
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if hostname.endswith(self.domain_suffix):
            workload_id = _uuid(hostname[: -len(self.domain_suffix)])
            return (workload_id, raw_path) if workload_id is not None else None
        if raw_path.startswith(PATH_PREFIX.encode()):
            label, slash, rest = raw_path[len(PATH_PREFIX) :].partition(b"/")
            workload_id = _uuid(label.decode("latin-1"))
            if workload_id is None:
                return None
            return workload_id, slash + rest if slash else b"/"
        return None

    async def runnable(self, route: Route) -> tuple[Route, Callable[[Send], Awaitable[int]] | None]:
        """The route to proxy to, or the answer to give instead (waiting out a migration first)."""
        if route.status in MIGRATING:
            counters.migration_waits_total += 1
            deadline = time.monotonic() + self.migration_wait
            while route.status not in GONE and not (route.status == S.RUNNING and route.endpoint):
                if time.monotonic() >= deadline:
                    counters.migration_wait_timeouts_total += 1
                    return route, self.unavailable("The workload is being moved to a new instance.")
                await asyncio.sleep(MIGRATION_POLL_SECONDS)
                route = await self.resolver.resolve(route.workload_id, max_age=MIGRATION_POLL_SECONDS)
        if route.status == S.RUNNING and route.endpoint:
            return route, None
        if route.status in GONE:
            message = {"error": "The workload is gone.", "status": route.status}
            return route, lambda send: respond(send, 410, message)
        if route.status in STARTING or route.status == S.RUNNING:
            return route, self.unavailable("The workload is starting.")
        if route.status in MIGRATING:
            return route, self.unavailable("The workload is being moved to a new instance.")
        return route, lambda send: respond(send, 404, {"error": "No such workload."})

    def unavailable(self, message: str) -> Callable[[Send], Awaitable[int]]:
        return lambda send: respond(send, 503, {"error": message}, extra=[(b"retry-after", self.retry_after)])

    async def proxy(
        self,
        scope: Scope,
        send: Send,
        route: Route,
        raw_path: bytes,
        body: RequestBody,
        admitted_by: bytes | None,
        log: dict[str, Any],
    ) -> int:
        url = f"http://{route.endpoint}{raw_path.decode('latin-1')}"
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        request = self.client().build_request(
            scope["method"],
            url,
            headers=self.upstream_headers(scope, admitted_by),
            content=body.stream() if body.present else None,
        )
        log["instance"] = route.endpoint
        upstream_started = time.monotonic()
        response = await self.client().send(request, stream=True)
        try:
            upstream_seconds = time.monotonic() - upstream_started
            log["upstream_ms"] = f"{upstream_seconds * 1000:.1f}"
            log["status"] = response.status_code
            counters.proxied(upstream_seconds)
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": _without_hop_by_hop(response.headers.raw),
                }
            )
            try:
                async for chunk in response.aiter_raw():
                    if chunk:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except httpx.HTTPError as exc:
                raise ResponseBroken(exc) from exc
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()
        return response.status_code

    def upstream_headers(self, scope: Scope, admitted_by: bytes | None) -> list[tuple[bytes, bytes]]:
        """What the instance gets: the client's headers less hop-by-hop ones and every credential of ours."""
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        dropped = HOP_BY_HOP | SET_BY_GATEWAY | _connection_listed(headers)
        forwarded_for = [value for name, value in headers if name == b"x-forwarded-for"]
        kept = without_credentials(headers, admitted_by=admitted_by)
        out = [(name, value) for name, value in kept if name not in dropped and name != b"x-forwarded-for"]
        client = scope.get("client")
        peer = (client[0] if client else "unknown").encode("latin-1")
        out.append((b"x-forwarded-for", b", ".join([*forwarded_for, peer])))
        out.append((b"x-forwarded-proto", scope.get("scheme", "http").encode("latin-1")))
        host = _header(headers, b"host")
        if host:
            out.append((b"x-forwarded-host", host))
        return out


class RequestBody:
    """The client's request body, streamed to the upstream as it arrives."""

    def __init__(self, receive: Receive, headers: list[tuple[bytes, bytes]]) -> None:
        self.receive = receive
        self.present = any(name in (b"content-length", b"transfer-encoding") for name, _ in headers)
        self.started = False
        self.disconnected = False

    async def stream(self) -> AsyncIterator[bytes]:
        self.started = True
        more = True
        while more:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                raise ClientDisconnected
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            if chunk:
                yield chunk


async def respond(
    send: Send, status: int, payload: dict[str, Any], *, extra: list[tuple[bytes, bytes]] | None = None
) -> int:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    return status


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes:
    for key, value in headers:
        if key == name:
            return value
    return b""


def _connection_listed(headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    listed = set()
    for name, value in headers:
        if name.lower() == b"connection":
            listed.update(token.strip().lower() for token in value.split(b",") if token.strip())
    return frozenset(listed)


def _without_hop_by_hop(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    dropped = HOP_BY_HOP | _connection_listed(headers)
    return [(name.lower(), value) for name, value in headers if name.lower() not in dropped]


def _uuid(label: str) -> UUID | None:
    try:
        return UUID(label) if len(label) == 36 else None
    except ValueError:
        return None
