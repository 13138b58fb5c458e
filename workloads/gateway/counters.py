"""In-process counters of one gateway process, for the metrics endpoint to expose.

Everything runs on the gateway's one event loop, so plain integers suffice.
"""

from __future__ import annotations

from collections import Counter
from typing import Any


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
        self.upstream_seconds_total = 0.0
        self.proxied_total = 0

    def response(self, status: int) -> None:
        self.requests_total += 1
        self.responses_by_status[status] += 1

    def proxied(self, upstream_seconds: float) -> None:
        self.proxied_total += 1
        self.upstream_seconds_total += upstream_seconds

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests_total": self.requests_total,
            "responses_by_status": {str(code): n for code, n in sorted(self.responses_by_status.items())},
            "proxied_total": self.proxied_total,
            "upstream_seconds_total": round(self.upstream_seconds_total, 6),
            "upstream_errors": dict(self.upstream_errors),
            "unauthorized_total": self.unauthorized_total,
            "migration_waits_total": self.migration_waits_total,
            "migration_wait_timeouts_total": self.migration_wait_timeouts_total,
            "kv_misses_total": self.kv_misses_total,
        }


counters = GatewayCounters()
