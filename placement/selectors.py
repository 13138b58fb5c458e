"""Reads: placement quotes, the offer catalog, price history and pool blocks."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone

from placement.models import Offer, PoolBlock, PoolStats, PriceHistory, PriceRefresh
from placement.optimizer import MAX_LIMIT, Candidate, Pool, Requirements, no_placement, rank_offers
from placement.risk import BUCKET_FREQUENCY

__all__ = [
    "Candidate",
    "blocked_pools",
    "offer_get",
    "offer_list",
    "placement_candidates",
    "pool_block_list",
    "price_history",
    "price_refresh_latest",
]


def placement_candidates(
    *,
    requirements: dict[str, Any],
    limit: int = 10,
    exclude_pools: Iterable[Pool] = (),
    honour_blocks: bool = True,
) -> list[Candidate]:
    """Offers that meet ``requirements``, best (lowest expected cost) first.

    ``requirements`` is the stored shape (``RequirementsSerializer().to_representation``);
    missing keys take their defaults. Pools blocked now and ``exclude_pools``
    (provider, region, availability_zone, instance_type) are skipped; an on-demand
    launch does not care about spot blocks (``honour_blocks=False``). Raises
    ``NoPlacement`` naming the requirement that excluded everything
    (``requirement="pool_blocks"`` when only blocks and exclusions are in the way).
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    req = Requirements.from_dict(requirements)
    excluded = (blocked_pools() if honour_blocks else set()) | {tuple(pool) for pool in exclude_pools}
    candidates = rank_offers(req, limit=limit, excluded=excluded)
    if not candidates:
        raise no_placement(req, excluded=excluded)
    return candidates


def blocked_pools() -> set[Pool]:
    return set(
        PoolBlock.objects.filter(until__gt=timezone.now()).values_list(
            "provider", "region", "availability_zone", "instance_type"
        )
    )


def offer_list(
    *,
    provider: str | None = None,
    region: str | None = None,
    gpu_type: str | None = None,
    min_vcpu: int | None = None,
    min_memory_gb: float | None = None,
) -> QuerySet[Offer]:
    offers = Offer.objects.select_related("instance_type")
    if provider:
        offers = offers.filter(instance_type__provider=provider)
    if region:
        offers = offers.filter(region=region)
    if gpu_type:
        offers = offers.filter(instance_type__gpu_type=gpu_type)
    if min_vcpu is not None:
        offers = offers.filter(instance_type__vcpu__gte=min_vcpu)
    if min_memory_gb is not None:
        offers = offers.filter(instance_type__memory_gb__gte=min_memory_gb)
    return offers.order_by(
        "expected_cost", "spot_price", "instance_type__provider", "region", "availability_zone", "id"
    )


def offer_get(*, offer_id: int) -> Offer | None:
    return Offer.objects.select_related("instance_type").filter(id=offer_id).first()


def price_history(*, offer: Offer) -> QuerySet[PriceHistory]:
    return PriceHistory.objects.filter(offer=offer).order_by("-observed_at", "-id")


def pool_block_list(*, active: bool | None = None) -> QuerySet[PoolBlock]:
    blocks = PoolBlock.objects.all()
    if active is True:
        blocks = blocks.filter(until__gt=timezone.now())
    elif active is False:
        blocks = blocks.filter(until__lte=timezone.now())
    return blocks.order_by("-until", "id")


def price_refresh_latest(*, provider: str) -> PriceRefresh | None:
    return PriceRefresh.objects.filter(provider=provider).order_by("-started_at", "-id").first()


# --- pool statistics: estimates from what the fleet saw ---------------------------------------

SECONDS_PER_MONTH = 30 * 86_400
DEFAULT_BUCKET = 2  # a pool the catalog does not know: its middle bucket
# The prior weighs as much as a day of watching one instance at the catalog's rate (its bucket), and as
# half a refusal in five launches: a pool with no history reads as the catalog says, and a few hours of
# real observations outweigh it.
PRIOR_EXPOSURE_SECONDS = 86_400.0
PRIOR_REFUSALS, PRIOR_LAUNCHES = 0.5, 5.0


@dataclass(frozen=True)
class PoolEstimate:
    pool: Pool
    market: str
    expected_lifetime_seconds: float  # mean time to preemption (infinite on demand)
    refusal_rate: float  # chance a launch is refused now
    instances_seen: int
    preemptions: int
    last_refusal_at: datetime | None


def _prior_hazard(risk_bucket: int) -> float:
    """Preemptions per second implied by the catalog's monthly interruption frequency."""
    frequency = float(BUCKET_FREQUENCY[risk_bucket])
    return -math.log(1 - frequency) / SECONDS_PER_MONTH


def prior_refusal_rate(placement_score: int | None) -> float:
    """The chance a launch is refused before the fleet has tried: a cloud's placement score read as the chance
    of success (10 of 10: it will succeed), or with no score the default prior."""
    if placement_score is None:
        return PRIOR_REFUSALS / PRIOR_LAUNCHES
    return 1.0 - min(max(placement_score, 1), 10) / 10.0


def pool_estimate(
    *,
    stats: PoolStats | None,
    risk_bucket: int = DEFAULT_BUCKET,
    pool: Pool,
    market: str = "spot",
    placement_score: int | None = None,
):
    """Expected spot lifetime and refusal rate of ``pool``: its decayed evidence over the catalog's prior
    (its interruption bucket) and, for the refusal rate, over the cloud's placement score where it has one."""
    if market != "spot":
        return PoolEstimate(pool, market, math.inf, 0.0, stats.instances_seen if stats else 0, 0, None)
    prior_preemptions = _prior_hazard(risk_bucket) * PRIOR_EXPOSURE_SECONDS
    preemptions = stats.preemptions if stats else 0.0
    exposure = stats.exposure_seconds if stats else 0.0
    hazard = (preemptions + prior_preemptions) / (exposure + PRIOR_EXPOSURE_SECONDS)
    refusals = stats.refusals if stats else 0.0
    launches = stats.launch_attempts if stats else 0.0
    return PoolEstimate(
        pool=pool,
        market=market,
        expected_lifetime_seconds=1 / hazard,
        refusal_rate=(refusals + prior_refusal_rate(placement_score) * PRIOR_LAUNCHES) / (launches + PRIOR_LAUNCHES),
        instances_seen=stats.instances_seen if stats else 0,
        preemptions=stats.preemptions_total if stats else 0,
        last_refusal_at=stats.last_refusal_at if stats else None,
    )


def pool_estimates(*, pools: Iterable[Pool], market: str = "spot") -> dict[Pool, PoolEstimate]:
    """Estimates for many pools in two queries (their statistics and their catalog buckets)."""
    pools = [tuple(pool) for pool in pools]
    if not pools:
        return {}
    wanted = Q()
    for provider, region, zone, instance_type in pools:
        wanted |= Q(provider=provider, region=region, availability_zone=zone, instance_type=instance_type)
    stats = {
        (s.provider, s.region, s.availability_zone, s.instance_type): s
        for s in PoolStats.objects.filter(wanted, market=market)
    }
    offers = Q()
    for provider, region, zone, instance_type in pools:
        offers |= Q(
            instance_type__provider=provider, region=region, availability_zone=zone, instance_type__name=instance_type
        )
    fields = ("instance_type__provider", "region", "availability_zone", "instance_type__name")
    catalog = {
        tuple(row[name] for name in fields): (row["risk_bucket"], row["placement_score"])
        for row in Offer.objects.filter(offers).values(*fields, "risk_bucket", "placement_score")
    }
    return {
        pool: pool_estimate(
            stats=stats.get(pool),
            risk_bucket=catalog.get(pool, (DEFAULT_BUCKET, None))[0],
            pool=pool,
            market=market,
            placement_score=catalog.get(pool, (DEFAULT_BUCKET, None))[1],
        )
        for pool in pools
    }
