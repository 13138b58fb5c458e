"""Health checks of many workloads at once, on one worker.

One sweep opens at most ``HEALTH_CHECK_CONCURRENCY`` connections at a time
with asyncio and gives each check ``HEALTH_CHECK_TIMEOUT_SECONDS`` in all
(connect, send, first response line), so thousands of endpoints take a few
timeouts' worth of time, not one timeout each.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    latency_ms: int
    error: str = ""


async def _check(address: str, path: str, timeout: float, gate: asyncio.Semaphore) -> CheckResult:
    host, _, port = address.rpartition(":")
    async with gate:
        started = time.monotonic()
        writer = None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, int(port))
                writer.write(f"GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n".encode())
                await writer.drain()
                status_line = await reader.readline()
        except TimeoutError:
            return CheckResult(False, round((time.monotonic() - started) * 1000), "timed out")
        except (OSError, ValueError) as error:
            return CheckResult(False, round((time.monotonic() - started) * 1000), str(error) or type(error).__name__)
        finally:
            if writer is not None:
                writer.close()
        latency = round((time.monotonic() - started) * 1000)
        parts = status_line.split()
        if len(parts) < 2 or not parts[1].isdigit():
            return CheckResult(False, latency, "not an HTTP answer")
        code = int(parts[1])
        return CheckResult(200 <= code < 300, latency, "" if 200 <= code < 300 else f"HTTP {code}")


async def _check_all(addresses: list[str], path: str, timeout: float, concurrency: int) -> list[CheckResult]:
    gate = asyncio.Semaphore(concurrency)
    return await asyncio.gather(*(_check(address, path, timeout, gate) for address in addresses))


def check_many(addresses: list[str], *, timeout: float, concurrency: int, path: str = "/health") -> list[CheckResult]:
    """GET ``path`` on every ``host:port`` concurrently; results in the same order."""
    if not addresses:
        return []
    return asyncio.run(_check_all(addresses, path, timeout, concurrency))
