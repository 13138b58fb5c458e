"""Where a workload answers: the routing KV per request, the database on a KV miss.

A gateway process keeps what it read for at most ``GATEWAY_ROUTE_CACHE_SECONDS``
(under a second, so a route registered or removed by provisioning, migration or
termination takes effect within a second without a restart). A request that
finds its upstream refusing connections reads the KV again at once.

Reads run off the event loop (the KV and the database are blocking clients), and
one read per workload is in flight at a time: when a cached route expires under
load, the requests that find it expired wait for the same read instead of each
queueing one of their own on the thread pool.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from uuid import UUID

from asgiref.sync import sync_to_async
from django.core.cache import caches
from django.db import close_old_connections

from gateway.counters import counters
from workloads import routing
from workloads.models import Workload, WorkloadRouting

# A workload's access mode and owner come from its config, set when it is
# created; they are re-read from the database this often.
META_CACHE_SECONDS = 30.0


@dataclass(frozen=True)
class WorkloadMeta:
    private: bool
    customer_id: int


@dataclass(frozen=True)
class Route:
    workload_id: UUID
    status: str | None  # None: no such workload
    endpoint: str | None
    meta: WorkloadMeta | None


def _kv_read(workload_id: UUID) -> tuple[str | None, str | None]:
    status_key, endpoint_key = routing.status_key(workload_id), routing.endpoint_key(workload_id)
    values = caches["routing"].get_many([status_key, endpoint_key])
    return values.get(status_key), values.get(endpoint_key)


def _db_read(workload_id: UUID) -> tuple[WorkloadMeta, str, str | None] | None:
    """The workload's meta, status and routed endpoint from the source of truth, or None."""
    close_old_connections()
    try:
        row = Workload.objects.filter(id=workload_id).values("status", "config", "customer_id").first()
        if row is None:
            return None
        endpoint = WorkloadRouting.objects.filter(workload_id=workload_id).values_list("endpoint", flat=True).first()
    finally:
        close_old_connections()
    config = row["config"] if isinstance(row["config"], dict) else {}
    meta = WorkloadMeta(private=config.get("access") == "private", customer_id=row["customer_id"])
    return meta, row["status"], endpoint


def _kv_refill(workload_id: UUID, status: str, endpoint: str | None) -> None:
    # add(), not set(): a transition that wrote the KV meanwhile is newer than what we read.
    kv = caches["routing"]
    kv.add(routing.status_key(workload_id), status, timeout=None)
    if endpoint:
        kv.add(routing.endpoint_key(workload_id), endpoint, timeout=None)


class RouteResolver:
    def __init__(self, *, cache_seconds: float) -> None:
        self.cache_seconds = cache_seconds
        self._routes: dict[UUID, tuple[float, Route]] = {}
        self._meta: dict[UUID, tuple[float, WorkloadMeta]] = {}
        self._reading: dict[UUID, asyncio.Future[Route]] = {}
        self._kv_read = sync_to_async(_kv_read, thread_sensitive=False)
        self._db_read = sync_to_async(_db_read, thread_sensitive=True)
        self._kv_refill = sync_to_async(_kv_refill, thread_sensitive=False)

    def forget(self, workload_id: UUID) -> None:
        self._routes.pop(workload_id, None)

    async def resolve(self, workload_id: UUID, *, max_age: float | None = None) -> Route:
        """The workload's route, read at most ``max_age`` seconds ago (default: the route cache time)."""
        max_age = self.cache_seconds if max_age is None else max_age
        now = time.monotonic()
        cached = self._routes.get(workload_id)
        if cached is not None and now - cached[0] < max_age:
            return cached[1]
        reading = self._reading.get(workload_id)
        if reading is None:
            reading = asyncio.ensure_future(self._read_and_keep(workload_id))
            self._reading[workload_id] = reading
            reading.add_done_callback(lambda _: self._reading.pop(workload_id, None))
        # shield: one waiter going away (a client disconnecting) does not cancel the others' read.
        return await asyncio.shield(reading)

    async def _read_and_keep(self, workload_id: UUID) -> Route:
        route = await self._read(workload_id)
        if len(self._routes) > 100_000:
            self._routes.clear()
        self._routes[workload_id] = (time.monotonic(), route)
        return route

    async def _read(self, workload_id: UUID) -> Route:
        status, endpoint = await self._kv_read(workload_id)
        meta_cached = self._meta.get(workload_id)
        meta = meta_cached[1] if meta_cached and time.monotonic() - meta_cached[0] < META_CACHE_SECONDS else None
        kv_miss = status is None or (status == "RUNNING" and not endpoint)
        if meta is not None and not kv_miss:
            return Route(workload_id, status, endpoint, meta)
        if kv_miss:
            counters.kv_misses_total += 1
        found = await self._db_read(workload_id)
        if found is None:
            self._meta.pop(workload_id, None)
            return Route(workload_id, None, None, None)
        meta, db_status, db_endpoint = found
        if len(self._meta) > 100_000:
            self._meta.clear()
        self._meta[workload_id] = (time.monotonic(), meta)
        if kv_miss:
            status, endpoint = db_status, db_endpoint
            await self._kv_refill(workload_id, status, endpoint)
        return Route(workload_id, status, endpoint, meta)
