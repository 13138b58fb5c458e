"""What moving a checkpoint between pools costs: the providers' published per-GB transfer prices.

``placement/data/egress.json`` holds the list prices (dated): within a zone, between zones of a
region, between regions on one continent and across continents of one cloud, and out of a cloud
to the internet, which is what a move to another cloud pays. A pool is (provider, region, zone,
instance type). The checkpoint is read from where the workload last ran. Pure: no models.
"""

from __future__ import annotations

import json
from decimal import Decimal
from functools import cache
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "egress.json"
GB = 1000**3  # providers bill transfer per decimal GB

# A region's continent from its name (every provider's names carry it).
CONTINENT_PREFIXES = (
    ("north-america", ("us-", "ca-", "northamerica-", "eastus", "westus", "centralus", "southcentralus",
                       "northcentralus", "westcentralus", "canada", "mexico")),
    ("south-america", ("sa-", "southamerica-", "brazil")),
    ("europe", ("eu-", "europe-", "northeurope", "westeurope", "uk", "france", "germany", "sweden",
                "switzerland", "norway", "italy", "poland", "spain")),
    ("asia-pacific", ("ap-", "asia-", "australia-", "australia", "japan", "korea", "southeastasia",
                      "eastasia", "india", "centralindia", "southindia")),
    ("middle-east-africa", ("me-", "af-", "me", "uae", "qatar", "israel", "southafrica")),
)  # fmt: skip


@cache
def egress_prices() -> dict[str, dict[str, Decimal]]:
    raw = json.loads(DATA.read_text())
    return {
        provider: {kind: Decimal(price) for kind, price in kinds.items()}
        for provider, kinds in raw["providers"].items()
    }


def continent(region: str) -> str:
    name = region.lower()
    for place, prefixes in CONTINENT_PREFIXES:
        if name.startswith(prefixes):
            return place
    return "unknown"


def egress_price_per_gb(*, source: tuple[str, ...], target: tuple[str, ...]) -> Decimal:
    """USD per GB to read a checkpoint made in pool ``source`` from pool ``target``."""
    (from_provider, from_region, from_zone, *_), (to_provider, to_region, to_zone, *_) = source, target
    prices = egress_prices().get(from_provider)
    if prices is None:
        return Decimal(0)
    if from_provider != to_provider:
        return prices["internet"]
    if from_region != to_region:
        same = continent(from_region) == continent(to_region) != "unknown"
        return prices["inter_region" if same else "inter_continent"]
    return prices["same_zone" if from_zone == to_zone else "cross_zone"]


def move_cost(*, size_bytes: int, source: tuple[str, ...] | None, target: tuple[str, ...]) -> Decimal:
    """USD to move ``size_bytes`` of checkpoint from ``source`` to ``target``; nothing to move, nothing to pay."""
    if source is None or size_bytes <= 0:
        return Decimal(0)
    return (Decimal(size_bytes) / GB * egress_price_per_gb(source=source, target=target)).quantize(Decimal("0.000001"))
