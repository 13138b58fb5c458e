"""The one rule for pricing an instance segment (docs/architecture.md §11).

A segment is priced for the seconds it ran (exactly, microseconds included)
times the hourly price it was bought at (``spot_price``: the spot price, or the
on-demand price for a segment bought on demand): hours = seconds / 3600,
cost = hours x price, quantized to 6 places (ROUND_HALF_UP). A segment bought
without a known on-demand price counts its spend as its on-demand equivalent
(no saving claimed). Usage records, summaries, a workload's cost so far, the console and
/metrics all price through ``segment_price``. Pure: no models, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal

CURRENCY = "USD"
SECONDS_PER_HOUR = Decimal(3600)
MONEY = Decimal("0.000001")  # bills are kept to 6 places
HOURS = Decimal("0.000001")
SECONDS = Decimal("0.001")
CENTS = Decimal("0.01")
PERCENT = Decimal("0.01")
ZERO = Decimal("0.000000")


@dataclass(frozen=True)
class SegmentPrice:
    seconds: Decimal
    hours: Decimal
    cost: Decimal
    on_demand_cost: Decimal  # equals ``cost`` when the on-demand price is unknown

    @property
    def saving(self) -> Decimal:
        return self.on_demand_cost - self.cost


def seconds_between(delta: timedelta) -> Decimal:
    """A duration in seconds, exactly (microseconds included), never negative."""
    microseconds = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return max(Decimal(microseconds) / Decimal(1_000_000), Decimal(0))


def price(seconds: Decimal, price_per_hour: Decimal) -> Decimal:
    """``seconds`` at ``price_per_hour``, to 6 places."""
    return (seconds / SECONDS_PER_HOUR * price_per_hour).quantize(MONEY, ROUND_HALF_UP)


def segment_price(*, seconds: Decimal, spot_price: Decimal, on_demand_price: Decimal | None) -> SegmentPrice:
    """What ``seconds`` of one segment cost at the prices it was bought at, and the same seconds on demand."""
    cost = price(seconds, Decimal(spot_price))
    on_demand = price(seconds, Decimal(on_demand_price)) if on_demand_price is not None else cost
    return SegmentPrice(
        seconds=seconds,
        hours=(seconds / SECONDS_PER_HOUR).quantize(HOURS, ROUND_HALF_UP),
        cost=cost,
        on_demand_cost=on_demand,
    )


def saving_percent(*, spend: Decimal, on_demand: Decimal) -> Decimal | None:
    """The saving as a percentage of the on-demand equivalent; None when nothing ran."""
    if not on_demand:
        return None
    return ((on_demand - spend) * 100 / on_demand).quantize(PERCENT, ROUND_HALF_UP)
