"""Reads: placement quotes, the offer catalog, price history and pool blocks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from placement.models import Offer, PoolBlock, PriceHistory, PriceRefresh
from placement.optimizer import MAX_LIMIT, Candidate, Pool, Requirements, no_placement, rank_offers

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
