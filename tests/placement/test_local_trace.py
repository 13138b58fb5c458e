"""The local cloud on a recorded spot trace: capacity and prices follow the trace's files on a compressed clock."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from placement.clouds import base, local
from placement.clouds.base import InstanceRequest, InstanceState, Market
from placement.clouds.local import trace
from placement.models import Offer, PriceRefresh
from placement.services import catalog_load_snapshot, catalog_refresh
from tests.placement.traces import write_trace

ROW_SECONDS = 100  # the hand-made trace's rows are 100 trace seconds apart
SPEED = 100.0  # one row per wall second
# Zone a: capacity for rows 0-2, none from row 3; zone b: always. Prices per row.
AVAILABILITY = {"us-east-1a": [1, 1, 1, 0, 0, 0, 0, 0], "us-east-2b": [1, 1, 1, 1, 1, 1, 1, 1]}
PRICES = {"us-east-1a": [0.9, 0.9, 1.1, 1.2, 1.2, 1.2, 1.2, 1.2], "us-east-2b": [1.5] * 8}


@pytest.fixture
def traced(settings: Any, tmp_path: Path) -> Iterator[Path]:
    """A tiny trace in the shared traces' format, the local cloud following it from row 0 now."""
    availability, prices = write_trace(tmp_path, availability=AVAILABILITY, prices=PRICES, row_seconds=ROW_SECONDS)
    settings.VAR_DIR = tmp_path / "var"
    settings.LOCAL_CLOUD_TRACE_AVAILABILITY = str(availability)
    settings.LOCAL_CLOUD_TRACE_PRICES = str(prices)
    settings.LOCAL_CLOUD_TRACE_SPEED = SPEED
    settings.LOCAL_CLOUD_BOOT_DELAY_MS = 0
    settings.LOCAL_CLOUD_TRACE_START_ROW = 0
    yield tmp_path
    local.terminate_all()


def at_row(monkeypatch: pytest.MonkeyPatch, row: float) -> None:
    """Stand the trace clock at ``row`` (wall time = origin + row * ROW_SECONDS / SPEED)."""
    origin = trace.trace_origin()
    monkeypatch.setattr(trace.time, "time", lambda: origin + row * ROW_SECONDS / SPEED)


def request(zone: str, token: str, market: Market = Market.SPOT) -> InstanceRequest:
    return InstanceRequest(
        idempotency_token=token,
        region=trace.region_of(zone),
        availability_zone=zone,
        instance_type="p3.2xlarge",
        max_price_per_hour=Decimal("5"),
        tags={base.MANAGED_BY_TAG: base.MANAGED_BY_VALUE},
        market=market,
    )


def test_a_spot_create_is_refused_while_the_trace_has_no_capacity_there(traced, monkeypatch):
    aws = local.LocalCloud("aws")
    at_row(monkeypatch, 3.5)

    with pytest.raises(base.CapacityError, match="InsufficientInstanceCapacity"):
        aws.create_instance(request("us-east-1a", "t-1"))
    assert aws.create_instance(request("us-east-2b", "t-2")).state is InstanceState.PENDING
    assert aws.create_instance(request("us-east-1a", "t-3", Market.ON_DEMAND)).market is Market.ON_DEMAND


def test_a_spot_instance_is_reclaimed_when_its_zone_loses_capacity_and_reported_once(traced, monkeypatch):
    aws = local.LocalCloud("aws")
    at_row(monkeypatch, 0.5)
    doomed = aws.create_instance(request("us-east-1a", "t-1"))
    steady = aws.create_instance(request("us-east-2b", "t-2"))
    on_demand = aws.create_instance(request("us-east-1a", "t-3", Market.ON_DEMAND))
    assert aws.interruption_warnings("us-east-1") == []

    at_row(monkeypatch, 3.2)
    [warning] = aws.interruption_warnings("us-east-1")

    assert warning.instance_id == doomed.instance_id and "in the trace" in warning.detail["reason"]
    assert aws.get_instance_status(doomed.instance_id, "us-east-1").state is InstanceState.PREEMPTED
    assert not local.process_alive(doomed.instance_id)
    assert aws.interruption_warnings("us-east-1") == []  # once
    assert aws.get_instance_status(steady.instance_id, "us-east-2").state is not InstanceState.PREEMPTED
    assert aws.get_instance_status(on_demand.instance_id, "us-east-1").state is not InstanceState.PREEMPTED


def test_the_traced_pools_join_the_catalog_and_their_prices_follow_the_trace(traced, monkeypatch, db):
    at_row(monkeypatch, 0.5)
    catalog_load_snapshot()
    offer = Offer.objects.get(instance_type__name="p3.2xlarge", availability_zone="us-east-1a")
    assert (offer.spot_price, offer.on_demand_price) == (Decimal("0.9"), Decimal("3.06"))
    assert offer.instance_type.gpu_type == "V100" and offer.instance_type.gpu_count == 1

    at_row(monkeypatch, 2.5)
    refresh = catalog_refresh(provider="aws", source=trace.LocalTracePriceSource("aws"))

    assert refresh.status == PriceRefresh.Status.SUCCEEDED, refresh.error
    offer.refresh_from_db()
    assert offer.spot_price == Decimal("1.1")
    assert Offer.objects.get(instance_type__name="p3.2xlarge", availability_zone="us-east-2b").spot_price == Decimal(
        "1.5"
    )


def test_the_clock_is_shared_and_compressed(traced, monkeypatch):
    origin = trace.trace_origin()
    assert trace.trace_origin() == origin  # fixed once, for every process of this VAR_DIR
    start = trace.trace_get().start
    monkeypatch.setattr(trace.time, "time", lambda: origin + 2.0)

    assert trace.trace_time() == pytest.approx(start + 2.0 * SPEED)
