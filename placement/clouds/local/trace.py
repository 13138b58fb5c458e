"""The local cloud on a recorded spot trace: capacity per zone and spot prices follow the trace's files.

A trace is the format of ``../shared/traces``: a directory of availability files, one per zone,
``<zone>_<anything>.csv`` with rows ``date,availability`` (1: spot capacity, 0: none), and
optionally a JSON file of prices, ``{"<file stem>": [spot $/h per row, ...]}``. With
``LOCAL_CLOUD_TRACE_AVAILABILITY`` set, the local cloud standing in for
``LOCAL_CLOUD_TRACE_PROVIDER`` treats the pools (that provider, the zone's region, the zone,
``LOCAL_CLOUD_TRACE_INSTANCE_TYPE``) as the trace says:

* a spot create there is refused for capacity while the zone's row says 0;
* a live spot instance there is reclaimed once its zone's row says 0 (seen by any status read,
  and reported by ``interruption_warnings``, which the beat polls);
* the trace's prices are that pool's spot price (the ``LocalTracePriceSource`` of the catalog
  refresh); on demand is ``LOCAL_CLOUD_TRACE_ON_DEMAND_PRICE``, always available.

The clock is compressed: ``LOCAL_CLOUD_TRACE_SPEED`` trace seconds pass per wall second,
from row ``LOCAL_CLOUD_TRACE_START_ROW`` at the trace's origin, the moment any process of this
``VAR_DIR`` first read the trace clock (kept in ``local-cloud/trace-clock.json``, so web,
workers and beat share one clock). Past its last row the trace keeps its last row.
"""

from __future__ import annotations

import bisect
import csv
import json
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from pathlib import Path

from django.conf import settings

from placement.clouds import base
from placement.clouds.local.store import read_json, root_dir
from placement.risk import BUCKET_FREQUENCY

_TRAILING_ZONE_LETTERS = re.compile(r"[a-z]+$")


class TraceError(base.PermanentCloudError):
    """The trace's files cannot be read as a trace."""


@dataclass(frozen=True)
class ZoneTrace:
    zone: str
    region: str
    times: tuple[float, ...]  # each row's time, seconds since the epoch (the trace's own dates)
    available: tuple[bool, ...]
    prices: tuple[Decimal, ...] | None  # spot $/h per row, if the trace has prices


@dataclass(frozen=True)
class Trace:
    zones: dict[str, ZoneTrace]
    start: float  # the trace time of row LOCAL_CLOUD_TRACE_START_ROW of the first zone

    def row(self, zone: ZoneTrace, at: float) -> int:
        """The row of ``zone`` in force at trace time ``at``."""
        return max(bisect.bisect_right(zone.times, at) - 1, 0)


def region_of(zone: str) -> str:
    """``us-east-1a`` → ``us-east-1``: a zone's name is its region's and a letter."""
    return _TRAILING_ZONE_LETTERS.sub("", zone) or zone


def trace_configured() -> bool:
    return bool(settings.LOCAL_CLOUD_TRACE_AVAILABILITY)


def _parse_time(text: str) -> float:
    return datetime.fromisoformat(text.strip()).replace(tzinfo=UTC).timestamp()


@cache
def _load(availability_dir: str, prices_file: str, start_row: int) -> Trace:
    directory = Path(availability_dir)
    files = sorted(directory.glob("*.csv"))
    if not files:
        raise TraceError(f"local cloud trace: no availability file (*.csv) in {directory}", provider="local")
    prices = json.loads(Path(prices_file).read_text()) if prices_file else {}
    zones = {}
    for path in files:
        with path.open(newline="") as handle:
            rows = [row for row in csv.DictReader(handle)]
        try:
            times = tuple(_parse_time(row["date"]) for row in rows)
            available = tuple(int(row["availability"]) > 0 for row in rows)
        except (KeyError, ValueError) as error:
            raise TraceError(f"local cloud trace: {path.name} is not date,availability rows ({error})") from None
        if not rows:
            raise TraceError(f"local cloud trace: {path.name} has no rows", provider="local")
        series = prices.get(path.stem)
        if series is not None and len(series) < len(rows):
            raise TraceError(f"local cloud trace: {len(series)} prices for {len(rows)} rows of {path.stem}")
        zone = path.stem.split("_")[0]
        zones[zone] = ZoneTrace(
            zone=zone,
            region=region_of(zone),
            times=times,
            available=available,
            prices=tuple(Decimal(str(price)) for price in series) if series is not None else None,
        )
    first = next(iter(zones.values()))
    return Trace(zones=zones, start=first.times[min(start_row, len(first.times) - 1)])


def trace_get() -> Trace:
    return _load(
        str(settings.LOCAL_CLOUD_TRACE_AVAILABILITY),
        str(settings.LOCAL_CLOUD_TRACE_PRICES or ""),
        settings.LOCAL_CLOUD_TRACE_START_ROW,
    )


def _clock_path() -> Path:
    return root_dir() / "trace-clock.json"


def trace_origin() -> float:
    """The wall time at which the trace stood at its start row: fixed by the first process to ask."""
    path = _clock_path()
    recorded = read_json(path)
    if recorded is not None:
        return float(recorded["origin"])
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:  # another process just fixed it
        return float(read_json(path)["origin"])
    origin = time.time()
    with os.fdopen(fd, "w") as handle:
        json.dump({"origin": origin}, handle)
    return origin


def trace_clock_reset() -> None:
    """Start the trace again from its start row at the next read (tests, a new demo)."""
    _clock_path().unlink(missing_ok=True)


def trace_time(now: float | None = None) -> float:
    """The trace time (seconds since the epoch, in the trace's own dates) at wall time ``now``."""
    wall = time.time() if now is None else now
    return trace_get().start + max(wall - trace_origin(), 0.0) * float(settings.LOCAL_CLOUD_TRACE_SPEED)


def traced_zone(provider: str, availability_zone: str, instance_type: str) -> ZoneTrace | None:
    """The zone's trace if this pool follows one."""
    if not trace_configured() or provider != settings.LOCAL_CLOUD_TRACE_PROVIDER:
        return None
    if instance_type != settings.LOCAL_CLOUD_TRACE_INSTANCE_TYPE:
        return None
    return trace_get().zones.get(availability_zone)


def spot_available(zone: ZoneTrace, *, now: float | None = None) -> bool:
    trace = trace_get()
    return zone.available[trace.row(zone, trace_time(now))]


def spot_price(zone: ZoneTrace, *, now: float | None = None) -> Decimal | None:
    if zone.prices is None:
        return None
    trace = trace_get()
    return zone.prices[trace.row(zone, trace_time(now))]


class LocalTracePriceSource(base.PriceSource):
    """Spot prices of the traced pools as the trace has them now (on demand: the configured price)."""

    def __init__(self, provider: str) -> None:
        self.provider = provider

    def fetch_spot_prices(self, *, regions: list[str]) -> list[base.ObservedPrice]:
        observed_at = datetime.now(UTC)
        prices = []
        for zone in trace_get().zones.values():
            price = spot_price(zone)
            if price is None or zone.region not in regions:
                continue
            prices.append(
                base.ObservedPrice(
                    provider=self.provider,
                    region=zone.region,
                    availability_zone=zone.zone,
                    instance_type=settings.LOCAL_CLOUD_TRACE_INSTANCE_TYPE,
                    spot_price=price,
                    observed_at=observed_at,
                    on_demand_price=settings.LOCAL_CLOUD_TRACE_ON_DEMAND_PRICE,
                )
            )
        return prices


def _risk_bucket(zone: ZoneTrace, frequencies: tuple[Decimal, ...]) -> int:
    """The catalog's interruption bucket for a zone: the first whose frequency covers the trace's share of
    rows without capacity (the trace's own evidence, nothing assumed)."""
    gone = Decimal(sum(1 for available in zone.available if not available)) / len(zone.available)
    return next((index for index, frequency in enumerate(frequencies) if gone <= frequency), len(frequencies) - 1)


def trace_snapshot() -> dict:
    """The traced pools in the bundled catalog's format: the instance type and an offer per zone."""
    provider, name = settings.LOCAL_CLOUD_TRACE_PROVIDER, settings.LOCAL_CLOUD_TRACE_INSTANCE_TYPE
    shape = settings.LOCAL_CLOUD_TRACE_SHAPE
    on_demand = settings.LOCAL_CLOUD_TRACE_ON_DEMAND_PRICE
    offers = []
    for zone in trace_get().zones.values():
        spot = spot_price(zone) or on_demand * Decimal("0.3")  # no prices in the trace: a typical spot share
        bucket = _risk_bucket(zone, BUCKET_FREQUENCY)
        offers.append([provider, zone.region, zone.zone, name, str(spot), str(on_demand), bucket])
    category = "gpu" if shape["gpu_count"] else "general"
    return {
        "sources": {provider: {"observed_at": datetime.now(UTC).isoformat()}},
        "instance_types": [
            {"provider": provider, "name": name, "category": category, "architecture": "x86_64", **shape}
        ],
        "offers": offers,
    }
