"""In-process counters of one gateway process, and their copy in the shared KV for ``/metrics``.

Everything on the request path runs on the gateway's one event loop, so plain
integers suffice: counting a request is a few dictionary and list updates, no I/O.

``/metrics`` is served by the web process, which cannot read this process's
memory. So every ``PUBLISH_SECONDS`` (when something changed, and at least every
``PROCESS_TTL_SECONDS / 4`` to stay listed) a background task of the gateway copies
its counters to the routing KV, the store every process already shares (Redis in
services mode, the file cache under ``var/kv/`` embedded): the key
``metrics:gateway:<process>``, one per gateway process (host, pid and a random
tag, so processes of several containers or ``--workers`` never collide), and
its name in the index ``metrics:gateway:processes``. Each process writes only
its own key, always its whole cumulative state (a ``set``, never a
read-modify-write of shared numbers), so concurrent gateways cannot lose counts;
``/metrics`` sums the processes listed. A stopped process stays counted for
``PROCESS_TTL_SECONDS``, then its key expires (Prometheus sees a counter reset,
as it does for any restarted process). A prometheus_client multiprocess
directory would not do: in docker-compose the gateway and web containers share
no file system, only Redis.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from bisect import bisect_left
from collections import Counter
from typing import Any

logger = logging.getLogger("gateway")

#: Upper bounds (seconds) of the upstream-latency histogram's buckets; one more bucket holds the rest.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
KV_PREFIX = "metrics:gateway"
INDEX_KEY = f"{KV_PREFIX}:processes"
PUBLISH_SECONDS = 1.0
PROCESS_TTL_SECONDS = 300


class GatewayCounters:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests_total = 0
        self.responses_by_status: Counter[int] = Counter()
        self.upstream_errors: Counter[str] = Counter()
        self.unauthorized_total = 0
        self.migration_waits_total = 0
        self.migration_wait_timeouts_total = 0
        self.kv_misses_total = 0
        self.body_too_large_total = 0
        self.websockets_total = 0
        self.websocket_migration_closes_total = 0
        self.upstream_seconds_total = 0.0
        self.proxied_total = 0
        # Per bucket of LATENCY_BUCKETS (not cumulative), the last one past the largest bound.
        self.upstream_latency_buckets = [0] * (len(LATENCY_BUCKETS) + 1)

    def response(self, status: int) -> None:
        self.requests_total += 1
        self.responses_by_status[status] += 1

    def proxied(self, upstream_seconds: float) -> None:
        self.proxied_total += 1
        self.upstream_seconds_total += upstream_seconds
        self.upstream_latency_buckets[bisect_left(LATENCY_BUCKETS, upstream_seconds)] += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests_total": self.requests_total,
            "responses_by_status": {str(code): n for code, n in sorted(self.responses_by_status.items())},
            "proxied_total": self.proxied_total,
            "upstream_seconds_total": round(self.upstream_seconds_total, 6),
            "upstream_latency_buckets": list(self.upstream_latency_buckets),
            "upstream_errors": dict(self.upstream_errors),
            "unauthorized_total": self.unauthorized_total,
            "migration_waits_total": self.migration_waits_total,
            "migration_wait_timeouts_total": self.migration_wait_timeouts_total,
            "kv_misses_total": self.kv_misses_total,
            "body_too_large_total": self.body_too_large_total,
            "websockets_total": self.websockets_total,
            "websocket_migration_closes_total": self.websocket_migration_closes_total,
        }


counters = GatewayCounters()


def _kv():
    from django.core.cache import caches

    return caches["routing"]


class CountersPublisher:
    """Copies one process's counters to the KV (call ``publish`` off the event loop: it does I/O)."""

    def __init__(self, source: GatewayCounters = counters) -> None:
        self.source = source
        self.process = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self.key = f"{KV_PREFIX}:{self.process}"
        self._published: dict[str, Any] | None = None
        self._published_at = 0.0

    def publish(self, *, force: bool = False) -> bool:
        """Write the counters if they changed (or ``force``, or to stay listed); whether it wrote."""
        state = self.source.snapshot()
        now = time.time()
        if not force and state == self._published and now - self._published_at < PROCESS_TTL_SECONDS / 4:
            return False
        kv = _kv()
        kv.set(self.key, {**state, "process": self.process, "published_at": now}, timeout=PROCESS_TTL_SECONDS)
        index = kv.get(INDEX_KEY) or {}
        if now - index.get(self.process, 0) >= PROCESS_TTL_SECONDS / 4:
            # A read-modify-write, but only on start and every few minutes; a name another process's
            # write dropped meanwhile is written again by its owner's next publish.
            index = {name: at for name, at in index.items() if now - at < PROCESS_TTL_SECONDS}
            index[self.process] = now
            kv.set(INDEX_KEY, index, timeout=None)
        self._published, self._published_at = state, now
        return True


def published_counters() -> list[dict[str, Any]]:
    """The counters every live (or recently stopped) gateway process published, one dict each."""
    kv = _kv()
    index = kv.get(INDEX_KEY) or {}
    if not index:
        return []
    found = kv.get_many([f"{KV_PREFIX}:{name}" for name in index])
    return [state for state in found.values() if isinstance(state, dict)]
