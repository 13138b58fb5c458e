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
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import websockets
import websockets.asyncio.client
from django.conf import settings

from arbitrage.logs import log_context_bind
from gateway.access import AccessControl, agent_only_path, credential_of, without_credentials
from gateway.counters import PUBLISH_SECONDS, CountersPublisher, counters
from gateway.resolver import Route, RouteResolver
from gateway.upstream import UpstreamBroken, UpstreamConnectError, UpstreamError, UpstreamPool, UpstreamTimeout
from workloads.models import WorkloadStatus as S

logger = logging.getLogger("gateway")
access_log = logging.getLogger("gateway.access")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"expect",  # uvicorn answers 100-continue itself, when the body is first read
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
# Websocket close codes the gateway itself sends: the workload is moving to a new instance (1012,
# "service restart": reconnect, the new connection lands on the new instance), and the instance's
# websocket broke off without a close frame (1014, "bad gateway").
CLOSE_MIGRATING = 1012
CLOSE_BAD_GATEWAY = 1014
# How often an open websocket checks that its workload still runs where it was connected.
WEBSOCKET_ROUTE_CHECK_SECONDS = 0.25
WEBSOCKET_PING_SECONDS = 20.0
WEBSOCKET_CLOSE_SECONDS = 5.0
PATH_PREFIX = "/w/"
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})


class ClientDisconnected(Exception):
    pass


class ResponseBroken(Exception):
    """The upstream failed while its response was being streamed to the client."""


class BodyTooLarge(Exception):
    """The client's request body ran over ``GATEWAY_MAX_REQUEST_BODY_BYTES``."""


@dataclass(frozen=True)
class Answer:
    """An answer the gateway makes itself: a status and a short JSON body."""

    status: int
    payload: dict[str, Any]
    extra: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def send_http(self, send: Send) -> int:
        return await respond(send, self.status, self.payload, extra=self.extra)

    async def send_websocket(self, scope: Scope, send: Send) -> int:
        """Refuse a websocket handshake with this answer (as HTTP, where the server can)."""
        if "websocket.http.response" in scope.get("extensions", {}):
            body = json.dumps(self.payload).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            extra = [(name, value) for name, value in self.extra if name != b"connection"]
            await send({"type": "websocket.http.response.start", "status": self.status, "headers": headers + extra})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008 if self.status in (401, 403) else 1011})
        return self.status


@dataclass(frozen=True)
class Admitted:
    route: Route
    raw_path: bytes
    admitted_by: bytes | None


class GatewayApp:
    def __init__(self) -> None:
        self.domain_suffix = f".workloads.{settings.WORKLOAD_DOMAIN}".lower()
        self.migration_wait = settings.GATEWAY_MIGRATION_WAIT_SECONDS
        self.retry_after = str(settings.GATEWAY_RETRY_AFTER_SECONDS).encode()
        self.max_body = settings.GATEWAY_MAX_REQUEST_BODY_BYTES
        self.resolver = RouteResolver(cache_seconds=settings.GATEWAY_ROUTE_CACHE_SECONDS)
        self.access = AccessControl()
        self._pool: UpstreamPool | None = None
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
            await self.websocket(scope, receive, send)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.pool()
                self.start_publishing()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop_publishing()
                if self._pool is not None:
                    await self._pool.aclose()
                    self._pool = None
                await send({"type": "lifespan.shutdown.complete"})
                return

    def pool(self) -> UpstreamPool:
        """The pooled upstream connections, shared by every request of this process."""
        if self._pool is None:
            self._pool = UpstreamPool(
                connect_timeout=settings.GATEWAY_CONNECT_TIMEOUT_SECONDS,
                read_timeout=settings.GATEWAY_UPSTREAM_TIMEOUT_SECONDS,
                max_connections=settings.GATEWAY_MAX_CONNECTIONS,
                max_idle=settings.GATEWAY_MAX_KEEPALIVE_CONNECTIONS,
            )
        return self._pool

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

    async def admit(self, scope: Scope, log: dict[str, Any]) -> Answer | Admitted:
        """Who the request is for and whether it may go there: the same rules for HTTP and websockets."""
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        host = _header(headers, b"host").decode("latin-1").strip().lower()
        target = self.target(host, scope)
        if target is None:
            if scope["type"] == "http" and not host.endswith(self.domain_suffix):
                if scope["path"] == "/healthz":
                    return Answer(200, {"status": "ok"})
                if scope["path"] == "/_gateway/counters":
                    return Answer(200, counters.snapshot())
            return Answer(404, {"error": "No workload at this address."})
        workload_id, raw_path = target
        log["workload"] = str(workload_id)
        log_context_bind(workload_id=workload_id)  # this request's task only
        if agent_only_path(raw_path):
            # The control plane calls the agent at its instance's address, never through here.
            return Answer(404, {"error": "No such path on a workload's endpoint."})

        route = await self.resolver.resolve(workload_id)
        if route.meta is None or route.status is None:
            return Answer(404, {"error": "No such workload.", "workload_id": str(workload_id)})
        credential_header, credential = credential_of(headers)
        if not await self.access.admits(workload_id=workload_id, meta=route.meta, credential=credential):
            counters.unauthorized_total += 1
            return Answer(
                401,
                {"error": "This workload is private: send the customer's API key or its access token."},
                [(b"www-authenticate", b'Bearer realm="workload"')],
            )
        return Admitted(route, raw_path, credential_header if route.meta.private else None)

    async def handle(self, scope: Scope, receive: Receive, send: Send, log: dict[str, Any]) -> int:
        admission = await self.admit(scope, log)
        if isinstance(admission, Answer):
            return await admission.send_http(send)
        route, raw_path, admitted_by = admission.route, admission.raw_path, admission.admitted_by
        workload_id = route.workload_id
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        too_large = self.body_too_large(headers)
        if too_large is not None:
            return await too_large.send_http(send)

        body = RequestBody(receive, headers, limit=self.max_body)
        for attempt in range(2):
            route, answer = await self.runnable(route)
            if answer is not None:
                return await answer.send_http(send)
            try:
                return await self.proxy(scope, send, route, raw_path, body, admitted_by, log)
            except BodyTooLarge:
                counters.body_too_large_total += 1
                if log.get("status"):  # the upstream answered before the body ran over
                    raise ResponseBroken(None) from None
                return await self.too_large_answer().send_http(send)
            except (UpstreamConnectError, UpstreamBroken) as exc:
                if body.disconnected:
                    raise ClientDisconnected from None
                # The instance went away before answering. If the route moved meanwhile (a
                # migration) and the request can be sent again, follow the route once: a refused
                # connection received nothing; a GET without a body can be repeated.
                resendable = isinstance(exc, UpstreamConnectError) or (
                    scope["method"] in IDEMPOTENT and not body.started
                )
                if attempt == 0 and resendable:
                    self.resolver.forget(workload_id)
                    fresh = await self.resolver.resolve(workload_id, max_age=0)
                    if fresh.status != S.RUNNING or fresh.endpoint != route.endpoint:
                        route = fresh
                        continue
                counters.upstream_errors[type(exc).__name__] += 1
                return await respond(send, 502, {"error": "The workload's instance did not answer."})
            except UpstreamTimeout:
                counters.upstream_errors["timeout"] += 1
                return await respond(send, 504, {"error": "The workload's instance did not answer in time."})
        return await respond(send, 502, {"error": "The workload's instance refused the connection."})

    # --- one websocket -----------------------------------------------------

    async def websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._publishing_started:
            self.start_publishing()
        started = time.monotonic()
        log: dict[str, Any] = {"workload": "-", "upstream_ms": "-", "instance": "-"}
        counters.websockets_total += 1
        try:
            outcome = await self.websocket_session(scope, receive, send, log)
        except (ClientDisconnected, OSError):
            outcome = "client gone"
        access_log.info(
            "workload=%s method=WEBSOCKET path=%s outcome=%s upstream=%s total_ms=%.1f",
            log["workload"],
            scope["path"],
            outcome,
            log["instance"],
            (time.monotonic() - started) * 1000,
        )

    async def websocket_session(self, scope: Scope, receive: Receive, send: Send, log: dict[str, Any]) -> str:
        if (await receive())["type"] != "websocket.connect":
            return "client gone"
        admission = await self.admit(scope, log)
        if isinstance(admission, Answer):
            return f"refused {await admission.send_websocket(scope, send)}"
        route = admission.route
        for attempt in range(2):
            route, answer = await self.runnable(route)
            if answer is not None:
                return f"refused {await answer.send_websocket(scope, send)}"
            try:
                upstream = await self.websocket_connect(scope, route, admission.raw_path, admission.admitted_by)
                break
            except (TimeoutError, OSError, websockets.exceptions.InvalidHandshake) as exc:
                status = getattr(getattr(exc, "response", None), "status_code", None)
                if status is not None:  # the instance answered the handshake with a refusal of its own
                    refusal = Answer(status, {"error": "The workload's instance refused the websocket."})
                    return f"refused {await refusal.send_websocket(scope, send)}"
                if attempt == 0 and isinstance(exc, ConnectionRefusedError):
                    self.resolver.forget(route.workload_id)
                    fresh = await self.resolver.resolve(route.workload_id, max_age=0)
                    if fresh.status != S.RUNNING or fresh.endpoint != route.endpoint:
                        route = fresh
                        continue
                counters.upstream_errors[f"websocket_{type(exc).__name__}"] += 1
                timed_out = isinstance(exc, TimeoutError)
                answer = Answer(504 if timed_out else 502, {"error": "The workload's instance did not answer."})
                return f"refused {await answer.send_websocket(scope, send)}"
        else:
            answer = Answer(502, {"error": "The workload's instance refused the connection."})
            return f"refused {await answer.send_websocket(scope, send)}"
        log["instance"] = route.endpoint
        async with upstream:
            await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})
            outcome = await self.websocket_relay(receive, send, upstream, route)
            await upstream.close(1001, "the workload is moving to a new instance" if "moved" in outcome else "")
            return outcome

    async def websocket_connect(
        self, scope: Scope, route: Route, raw_path: bytes, admitted_by: bytes | None
    ) -> websockets.asyncio.client.ClientConnection:
        url = f"ws://{route.endpoint}{raw_path.decode('latin-1')}"
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in self.upstream_headers(scope, admitted_by)
            if not name.startswith(b"sec-websocket-")
        ]
        return await websockets.asyncio.client.connect(
            url,
            additional_headers=headers,
            subprotocols=scope.get("subprotocols") or None,
            compression=None,
            open_timeout=settings.GATEWAY_CONNECT_TIMEOUT_SECONDS,
            ping_interval=WEBSOCKET_PING_SECONDS,
            ping_timeout=WEBSOCKET_PING_SECONDS,
            close_timeout=WEBSOCKET_CLOSE_SECONDS,
            max_size=settings.GATEWAY_WEBSOCKET_MAX_MESSAGE_BYTES,
            user_agent_header=None,
            proxy=None,
        )

    async def websocket_relay(
        self, receive: Receive, send: Send, upstream: websockets.asyncio.client.ClientConnection, route: Route
    ) -> str:
        """Messages both ways until one side closes (its code passed on) or the workload moves (1012)."""

        async def client_to_upstream() -> str:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    code = message.get("code", 1000)
                    await upstream.close(code if _sendable_close_code(code) else 1000, message.get("reason") or "")
                    return f"client closed {code}"
                if message.get("text") is not None:
                    await upstream.send(message["text"])
                elif message.get("bytes") is not None:
                    await upstream.send(message["bytes"])

        async def upstream_to_client() -> str:
            try:
                async for data in upstream:
                    if isinstance(data, str):
                        await send({"type": "websocket.send", "text": data})
                    else:
                        await send({"type": "websocket.send", "bytes": data})
            except websockets.exceptions.ConnectionClosedError:
                pass
            received = upstream.protocol.close_rcvd
            if received is None or not _sendable_close_code(received.code):
                # No close frame from the instance: it went away. A workload being moved says so.
                fresh = await self.resolver.resolve(route.workload_id, max_age=0)
                if fresh.status != S.RUNNING or fresh.endpoint != route.endpoint:
                    return await self.websocket_moved(send)
                counters.upstream_errors["websocket_broken"] += 1
                await send({"type": "websocket.close", "code": CLOSE_BAD_GATEWAY, "reason": "instance went away"})
                return "instance went away"
            await send({"type": "websocket.close", "code": received.code, "reason": received.reason})
            return f"instance closed {received.code}"

        async def watch_route() -> str:
            while True:
                await asyncio.sleep(WEBSOCKET_ROUTE_CHECK_SECONDS)
                current = await self.resolver.resolve(route.workload_id)
                if current.status != S.RUNNING or current.endpoint != route.endpoint:
                    return await self.websocket_moved(send)  # the instance is told once the relay stops

        tasks = [asyncio.ensure_future(side()) for side in (client_to_upstream, upstream_to_client, watch_route)]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            return next(iter(done)).result()
        except websockets.exceptions.ConnectionClosed:
            return "closed"
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def websocket_moved(self, send: Send) -> str:
        counters.websocket_migration_closes_total += 1
        await send({"type": "websocket.close", "code": CLOSE_MIGRATING, "reason": "workload moving, reconnect"})
        return f"moved {CLOSE_MIGRATING}"

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

    async def runnable(self, route: Route) -> tuple[Route, Answer | None]:
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
            return route, Answer(410, {"error": "The workload is gone.", "status": route.status})
        if route.status in STARTING or route.status == S.RUNNING:
            return route, self.unavailable("The workload is starting.")
        if route.status in MIGRATING:
            return route, self.unavailable("The workload is being moved to a new instance.")
        return route, Answer(404, {"error": "No such workload."})

    def unavailable(self, message: str) -> Answer:
        return Answer(503, {"error": message}, [(b"retry-after", self.retry_after)])

    def body_too_large(self, headers: list[tuple[bytes, bytes]]) -> Answer | None:
        """413 at once for a declared length over the limit (a chunked body is counted as it streams)."""
        declared = _header(headers, b"content-length")
        if declared.strip().isdigit() and int(declared) > self.max_body:
            counters.body_too_large_total += 1
            return self.too_large_answer()
        return None

    def too_large_answer(self) -> Answer:
        return Answer(
            413,
            {"error": "The request body is too large.", "limit_bytes": self.max_body},
            [(b"connection", b"close")],
        )

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
        target = raw_path.decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        log["instance"] = route.endpoint
        upstream_started = time.monotonic()
        response = await self.pool().request(
            route.endpoint,
            scope["method"],
            target,
            self.upstream_headers(scope, admitted_by),
            body.stream() if body.present else None,
        )
        try:
            upstream_seconds = time.monotonic() - upstream_started
            log["upstream_ms"] = f"{upstream_seconds * 1000:.1f}"
            log["status"] = response.status_code
            counters.proxied(upstream_seconds)
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": _without_hop_by_hop(response.headers),
                }
            )
            try:
                async for chunk in response.chunks():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except UpstreamError as exc:
                raise ResponseBroken(exc) from exc
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            response.release()
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

    def __init__(self, receive: Receive, headers: list[tuple[bytes, bytes]], *, limit: int) -> None:
        self.receive = receive
        self.present = any(name in (b"content-length", b"transfer-encoding") for name, _ in headers)
        self.limit = limit
        self.received = 0
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
            self.received += len(chunk)
            if self.received > self.limit:
                raise BodyTooLarge
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


def _sendable_close_code(code: int | None) -> bool:
    """Whether a close code may be put in a close frame (1005, 1006 and 1015 only describe one's absence)."""
    return code is not None and (
        code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011) or 1012 <= code <= 1014 or 3000 <= code <= 4999
    )
