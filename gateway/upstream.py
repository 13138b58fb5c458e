"""The gateway's upstream HTTP/1.1 client: pooled keep-alive connections on asyncio protocols.

A reverse proxy spends most of its time in its upstream client, so this one does
little per request: one write for the request head, httptools (the parser uvicorn
uses for the client side) for the response, bodies passed on as they arrive with
flow control both ways, and a last-in-first-out pool of idle connections per
instance address. (httpx, used before, cost several times the CPU per request and
queued requests in its pool at 64 concurrent connections.)

Errors: ``UpstreamConnectError`` (nothing was sent: safe to send elsewhere),
``UpstreamBroken`` (the connection failed after the request went out),
``UpstreamTimeout`` (connecting, waiting for a pool slot, or reading).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator

import httptools

# Response body bytes buffered from an instance before it is paused until the client catches up.
READ_HIGH_WATER = 256 * 1024
WRITE_CHUNK = 256 * 1024


class UpstreamError(Exception):
    pass


class UpstreamConnectError(UpstreamError):
    """The instance's address refused or did not take the connection: nothing was sent."""


class UpstreamBroken(UpstreamError):
    """The connection failed, or the instance answered something that is not HTTP, after the request went out."""


class UpstreamTimeout(UpstreamError):
    pass


class _Connection(asyncio.Protocol):
    def __init__(self, pool: UpstreamPool, endpoint: str) -> None:
        self.pool, self.endpoint = pool, endpoint
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.can_write = asyncio.Event()
        self.can_write.set()
        self.parser = httptools.HttpResponseParser(self)
        self.reset(head_only=False)

    def reset(self, *, head_only: bool) -> None:
        self.head_only = head_only
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head: asyncio.Future[None] = self.loop.create_future()
        self.body: deque[bytes] = deque()
        self.buffered = 0
        self.arrived = asyncio.Event()
        self.complete = False
        self.received_any = False
        self.error: UpstreamError | None = None
        self.keep_alive = False
        self.eof_body = False

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass
        except httptools.HttpParserError as exc:
            self.fail(UpstreamBroken(f"not an HTTP answer: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.can_write.set()
        if self.head.done() and not self.complete and self.eof_body and self.error is None:
            self.complete = True  # a body delimited by the connection's end
            self.arrived.set()
        elif not self.complete:
            self.fail(UpstreamBroken("the instance closed the connection"))
        self.pool.forget(self)

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    # --- httptools callbacks ---

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
            self.headers = []
            return
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()
        names = {name for name, _ in self.headers}
        self.eof_body = b"content-length" not in names and b"transfer-encoding" not in names
        if not self.head.done():
            self.head.set_result(None)
        if self.head_only:
            self.keep_alive = False  # the parser would wait for a body HEAD answers never have
            self.complete = True
            self.arrived.set()

    def on_body(self, body: bytes) -> None:
        if self.status and not self.head_only:
            self.body.append(bytes(body))
            self.buffered += len(body)
            if self.buffered > READ_HIGH_WATER and self.transport is not None:
                self.transport.pause_reading()
            self.arrived.set()

    def on_message_complete(self) -> None:
        if self.status:
            self.complete = True
            self.arrived.set()

    # --- used by the pool and the response ---

    def fail(self, error: UpstreamError) -> None:
        if self.error is None:
            self.error = error
        if not self.head.done():
            self.head.set_exception(error)
        self.arrived.set()
        self.close()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True

    def write(self, data: bytes) -> None:
        if self.closed or self.transport is None:
            raise UpstreamBroken("the connection to the instance is closed")
        self.transport.write(data)

    async def drain(self) -> None:
        await self.can_write.wait()
        if self.closed:
            raise self.error or UpstreamBroken("the connection to the instance is closed")


class UpstreamResponse:
    def __init__(self, connection: _Connection, read_timeout: float) -> None:
        self._connection = connection
        self._read_timeout = read_timeout
        self.status_code = connection.status
        self.headers = connection.headers
        self._released = False

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body, piece by piece as the instance sends it."""
        connection = self._connection
        while True:
            while connection.body:
                piece = connection.body.popleft()
                connection.buffered -= len(piece)
                if connection.buffered <= READ_HIGH_WATER // 2 and connection.transport is not None:
                    connection.transport.resume_reading()
                yield piece
            if connection.error is not None:
                raise connection.error
            if connection.complete:
                return
            connection.arrived.clear()
            try:
                async with asyncio.timeout(self._read_timeout):
                    await connection.arrived.wait()
            except TimeoutError:
                connection.close()
                raise UpstreamTimeout("the instance stopped sending its answer") from None

    def release(self) -> None:
        """Back to the pool if the whole answer was read and the connection may be reused, else closed."""
        if self._released:
            return
        self._released = True
        connection = self._connection
        reusable = connection.complete and connection.keep_alive and not connection.closed and not connection.body
        self._connection.pool.release(connection, reusable=reusable)


class UpstreamPool:
    def __init__(self, *, connect_timeout: float, read_timeout: float, max_connections: int, max_idle: int) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_idle = max_idle
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: dict[str, list[_Connection]] = {}
        self._idle_count = 0
        self._open: set[_Connection] = set()

    async def request(
        self,
        endpoint: str,
        method: str,
        target: str,
        headers: list[tuple[bytes, bytes]],
        body: AsyncIterator[bytes] | None = None,
    ) -> UpstreamResponse:
        """Send the request and wait for the head of the answer; read it with ``chunks()``, then ``release()``."""
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise UpstreamTimeout("no free upstream connection in time") from None
        try:
            for attempt in range(2):
                connection, reused = await self._connection(endpoint)
                connection.reset(head_only=method == "HEAD")
                try:
                    return await self._exchange(connection, method, target, headers, body)
                except UpstreamBroken:
                    # A kept-alive connection the instance closed meanwhile: nothing of this request
                    # was taken, so it goes again on a fresh one (only without a body, which is gone).
                    if attempt == 0 and reused and body is None and not connection.received_any:
                        continue
                    raise
        except BaseException:
            self._slots.release()
            raise
        raise AssertionError("unreachable")

    async def _exchange(
        self,
        connection: _Connection,
        method: str,
        target: str,
        headers: list[tuple[bytes, bytes]],
        body: AsyncIterator[bytes] | None,
    ) -> UpstreamResponse:
        chunked = body is not None and not any(name == b"content-length" for name, _ in headers)
        head = [
            b"%s %s HTTP/1.1\r\nhost: %s\r\n"
            % (method.encode(), target.encode("latin-1"), connection.endpoint.encode())
        ]
        head.extend(b"%s: %s\r\n" % (name, value) for name, value in headers)
        if chunked:
            head.append(b"transfer-encoding: chunked\r\n")
        head.append(b"\r\n")
        try:
            connection.write(b"".join(head))
            if body is not None:
                async for chunk in body:
                    connection.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                    await connection.drain()
                if chunked:
                    connection.write(b"0\r\n\r\n")
            async with asyncio.timeout(self.read_timeout):
                await connection.head
        except TimeoutError:
            connection.close()
            raise UpstreamTimeout("the instance did not answer in time") from None
        except BaseException:
            connection.close()  # half a request on it: never reused
            raise
        return UpstreamResponse(connection, self.read_timeout)

    async def _connection(self, endpoint: str) -> tuple[_Connection, bool]:
        idle = self._idle.get(endpoint)
        while idle:
            connection = idle.pop()
            self._idle_count -= 1
            if not connection.closed:
                return connection, True
        host, _, port = endpoint.rpartition(":")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(self, endpoint), host.strip("[]"), int(port)
                )
        except TimeoutError:
            raise UpstreamTimeout(f"connecting to {endpoint} timed out") from None
        except (OSError, ValueError) as exc:
            raise UpstreamConnectError(f"could not connect to {endpoint}: {exc}") from exc
        self._open.add(connection)
        return connection, False

    def release(self, connection: _Connection, *, reusable: bool) -> None:
        self._slots.release()
        if reusable and self._idle_count < self.max_idle:
            self._idle.setdefault(connection.endpoint, []).append(connection)
            self._idle_count += 1
        else:
            connection.close()

    def forget(self, connection: _Connection) -> None:
        self._open.discard(connection)
        idle = self._idle.get(connection.endpoint)
        if idle and connection in idle:
            idle.remove(connection)
            self._idle_count -= 1
            if not idle:
                del self._idle[connection.endpoint]

    async def aclose(self) -> None:
        for connection in list(self._open):
            connection.close()
        self._idle.clear()
        self._idle_count = 0
