"""Writes: loading the bundled catalog, refreshing prices from the clouds, blocking pools.

Every write of an offer's price keeps three things in step, in one transaction:
the offer (with its expected cost), one ``PriceHistory`` row when the price
changed, and its instance type's lower bounds used by the optimizer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max, OuterRef, Subquery
from django.utils import timezone

from placement.clouds.base import CloudError, ObservedPlacementScore, ObservedPrice, PriceSource, get_price_source
from placement.clouds.local.trace import trace_configured, trace_snapshot
from placement.models import InstanceType, Offer, PoolBlock, PoolStats, PriceHistory, PriceRefresh
from placement.optimizer import Pool
from placement.risk import MONEY_QUANTUM, RiskModel

logger = logging.getLogger(__name__)

SNAPSHOT_PATH = Path(__file__).resolve().parent / "data" / "catalog.json"
SNAPSHOT_SOURCE = "snapshot"
BATCH_SIZE = 500
_TYPE_FIELDS = ("category", "vcpu", "memory_gb", "gpu_count", "gpu_type", "architecture")
_PRICE_FIELDS = ["spot_price", "on_demand_price", "risk_bucket", "expected_cost", "observed_at", "source"]


# --- the bundled snapshot -----------------------------------------------------------


def catalog_load_snapshot(*, path: Path = SNAPSHOT_PATH) -> dict[str, int]:
    """Load the bundled catalog; loading it again changes nothing.

    An offer whose price was observed after the snapshot's date (a live refresh)
    keeps that price. Returns counts of instance types and offers created,
    updated and unchanged.
    """
    counts = _catalog_load(json.loads(path.read_text()))
    if trace_configured():  # the local cloud follows a trace: its pools join the catalog
        counts["trace_offers"] = _catalog_load(trace_snapshot())["offers"]
    return counts


def _catalog_load(snapshot: dict[str, Any]) -> dict[str, int]:
    observed_at = {
        provider: datetime.fromisoformat(source["observed_at"]) for provider, source in snapshot["sources"].items()
    }
    model = RiskModel.from_settings()
    counts = dict.fromkeys(("types_created", "types_updated", "created", "updated", "unchanged"), 0)
    with transaction.atomic():
        types = _upsert_instance_types(snapshot["instance_types"], counts)
        existing = {
            (offer.instance_type_id, offer.region, offer.availability_zone): offer
            for offer in Offer.objects.filter(instance_type__in=types.values())
        }
        new_offers, changed, history = [], [], []
        for provider, region, zone, type_name, spot, on_demand, bucket in snapshot["offers"]:
            instance_type = types[(provider, type_name)]
            price = {
                "spot_price": Decimal(spot),
                "on_demand_price": Decimal(on_demand),
                "risk_bucket": bucket,
                "observed_at": observed_at[provider],
                "source": SNAPSHOT_SOURCE,
            }
            price["expected_cost"] = model.expected_cost(spot_price=price["spot_price"], risk_bucket=bucket)
            offer = existing.get((instance_type.id, region, zone))
            if offer is None:
                new_offers.append(Offer(instance_type=instance_type, region=region, availability_zone=zone, **price))
            elif offer.observed_at >= price["observed_at"] or not _price_differs(offer, price):
                counts["unchanged"] += 1
            else:
                for name, value in price.items():
                    setattr(offer, name, value)
                changed.append(offer)
                history.append(_history(offer))
        Offer.objects.bulk_create(new_offers, batch_size=BATCH_SIZE)
        history.extend(_history(offer) for offer in new_offers)
        Offer.objects.bulk_update(changed, _PRICE_FIELDS, batch_size=BATCH_SIZE)
        PriceHistory.objects.bulk_create(history, batch_size=BATCH_SIZE)
        counts["created"], counts["updated"] = len(new_offers), len(changed)
        counts["rescored"] = _rescore()
        instance_types_refresh_bounds()
    counts["instance_types"] = len(types)
    counts["offers"] = len(snapshot["offers"])
    return counts


def _upsert_instance_types(rows: list[dict[str, Any]], counts: dict[str, int]) -> dict[tuple[str, str], InstanceType]:
    existing = {(t.provider, t.name): t for t in InstanceType.objects.all()}
    new, changed = [], []
    for row in rows:
        key = (row["provider"], row["name"])
        shape = {name: row.get(name) for name in _TYPE_FIELDS}
        instance_type = existing.get(key)
        if instance_type is None:
            new.append(InstanceType(provider=row["provider"], name=row["name"], **shape))
        elif any(getattr(instance_type, name) != value for name, value in shape.items()):
            for name, value in shape.items():
                setattr(instance_type, name, value)
            changed.append(instance_type)
    InstanceType.objects.bulk_create(new, batch_size=BATCH_SIZE)
    InstanceType.objects.bulk_update(changed, list(_TYPE_FIELDS), batch_size=BATCH_SIZE)
    counts["types_created"], counts["types_updated"] = len(new), len(changed)
    existing.update({(t.provider, t.name): t for t in new})
    return {(row["provider"], row["name"]): existing[(row["provider"], row["name"])] for row in rows}


def _price_differs(offer: Offer, price: dict[str, Any]) -> bool:
    return (offer.spot_price, offer.on_demand_price, offer.risk_bucket) != (
        price["spot_price"],
        price["on_demand_price"],
        price["risk_bucket"],
    )


def _history(offer: Offer) -> PriceHistory:
    return PriceHistory(
        offer=offer,
        spot_price=offer.spot_price,
        on_demand_price=offer.on_demand_price,
        risk_bucket=offer.risk_bucket,
        observed_at=offer.observed_at,
        source=offer.source,
    )


def catalog_rescore() -> int:
    """Recompute every offer's expected cost from the current risk settings; returns how many changed."""
    with transaction.atomic():
        changed = _rescore()
        if changed:
            instance_types_refresh_bounds()
    return changed


def _rescore() -> int:
    model = RiskModel.from_settings()
    changed = []
    for offer in Offer.objects.only("id", "spot_price", "risk_bucket", "expected_cost").iterator(chunk_size=2000):
        expected = model.expected_cost(spot_price=offer.spot_price, risk_bucket=offer.risk_bucket)
        if expected != offer.expected_cost:
            offer.expected_cost = expected
            changed.append(offer)
    Offer.objects.bulk_update(changed, ["expected_cost"], batch_size=BATCH_SIZE)
    return len(changed)


def instance_types_refresh_bounds(*, type_ids: Iterable[int] | None = None) -> None:
    """Each type's cheapest spot price and expected cost among its offers (NULL when it has none)."""
    offers = Offer.objects.filter(instance_type=OuterRef("pk"))
    types = InstanceType.objects.all() if type_ids is None else InstanceType.objects.filter(id__in=list(type_ids))
    types.update(
        min_spot_price=Subquery(offers.order_by("spot_price").values("spot_price")[:1]),
        min_expected_cost=Subquery(offers.order_by("expected_cost").values("expected_cost")[:1]),
    )


# --- refresh from the clouds --------------------------------------------------------


def catalog_refresh(
    *, provider: str, regions: list[str] | None = None, source: PriceSource | None = None
) -> PriceRefresh:
    """Read current spot prices from ``provider``'s price API into the catalog.

    ``source`` defaults to the provider's registered price source (``PRICE_SOURCES``).
    A refresh that fails (the API refuses, times out, answers nonsense or nothing)
    changes no price: the provider keeps its last good prices, and the returned
    ``PriceRefresh`` (also in the admin) says why.
    """
    source = source or get_price_source(provider)
    regions = regions or catalog_regions(provider=provider)
    started_at = timezone.now()
    try:
        if not regions:
            raise CloudError(f"the catalog holds no {provider} region to refresh", provider=provider)
        observed = source.fetch_spot_prices(regions=regions)
        if not observed:
            raise CloudError(f"the price API returned no prices for {', '.join(regions)}", provider=provider)
    except CloudError as exc:
        logger.warning("price refresh for %s failed, keeping the last good prices: %s", provider, exc.message)
        return PriceRefresh.objects.create(
            provider=provider,
            regions=regions,
            status=PriceRefresh.Status.FAILED,
            error=f"{type(exc).__name__}: {exc.message} (kept the last good prices)",
            started_at=started_at,
            finished_at=timezone.now(),
        )
    counts = prices_apply(provider=provider, prices=observed, source=f"{provider}-api")
    logger.info("price refresh for %s: %s", provider, counts)
    scored = placement_scores_refresh(provider=provider, source=source, regions=regions)
    if scored is not None:
        logger.info("placement scores for %s: %s offers scored", provider, scored)
    return PriceRefresh.objects.create(
        provider=provider,
        regions=regions,
        status=PriceRefresh.Status.SUCCEEDED,
        started_at=started_at,
        finished_at=timezone.now(),
        **counts,
    )


def catalog_refresh_all() -> list[PriceRefresh]:
    """Refresh every provider in ``PRICE_SOURCES``; one provider failing does not stop the others."""
    return [catalog_refresh(provider=provider) for provider in settings.PRICE_SOURCES]


def catalog_regions(*, provider: str) -> list[str]:
    """The regions the catalog holds for ``provider`` (narrowed by ``PRICE_REFRESH_REGIONS`` when set)."""
    regions = list(
        Offer.objects.filter(instance_type__provider=provider)
        .order_by("region")
        .values_list("region", flat=True)
        .distinct()
    )
    if settings.PRICE_REFRESH_REGIONS:
        regions = [region for region in regions if region in settings.PRICE_REFRESH_REGIONS]
    return regions


def prices_apply(*, provider: str, prices: Iterable[ObservedPrice], source: str) -> dict[str, int]:
    """Write observed prices onto the pools the catalog already has.

    A price with an empty ``availability_zone`` is the region's (GCP, Azure) and
    applies to each zone the catalog holds there. A price for a pool the catalog
    lacks is counted and skipped: the catalog only learns shapes from the snapshot.
    """
    latest: dict[tuple[str, str, str], ObservedPrice] = {}
    for price in prices:
        if price.provider != provider or price.spot_price <= 0:
            continue
        key = (price.instance_type, price.region, price.availability_zone)
        if key not in latest or price.observed_at > latest[key].observed_at:
            latest[key] = price
    model = RiskModel.from_settings()
    counts = {"prices_seen": len(latest), "offers_updated": 0, "prices_changed": 0, "unknown_pools": 0}
    with transaction.atomic():
        offers: dict[tuple[str, str, str], list[Offer]] = {}
        for offer in Offer.objects.select_related("instance_type").filter(
            instance_type__provider=provider, region__in={key[1] for key in latest}
        ):
            pool = (offer.instance_type.name, offer.region)
            offers.setdefault((*pool, offer.availability_zone), []).append(offer)
            offers.setdefault((*pool, ""), []).append(offer)
        touched, history = [], []
        for key, price in latest.items():
            if key not in offers:
                counts["unknown_pools"] += 1
            for offer in offers.get(key, ()):
                spot = price.spot_price.quantize(MONEY_QUANTUM)
                on_demand = (price.on_demand_price or offer.on_demand_price).quantize(MONEY_QUANTUM)
                if (spot, on_demand) != (offer.spot_price, offer.on_demand_price):
                    offer.spot_price, offer.on_demand_price = spot, on_demand
                    offer.expected_cost = model.expected_cost(spot_price=spot, risk_bucket=offer.risk_bucket)
                    history.append(offer)
                offer.observed_at, offer.source = price.observed_at, source
                touched.append(offer)
        Offer.objects.bulk_update(touched, _PRICE_FIELDS, batch_size=BATCH_SIZE)
        PriceHistory.objects.bulk_create([_history(offer) for offer in history], batch_size=BATCH_SIZE)
        instance_types_refresh_bounds(type_ids={offer.instance_type_id for offer in touched})
    counts["offers_updated"], counts["prices_changed"] = len(touched), len(history)
    return counts


def placement_scores_apply(*, provider: str, scores: Iterable[ObservedPlacementScore]) -> int:
    """Write a cloud's placement scores onto the pools the catalog has; how many offers took one."""
    latest = {
        (score.instance_type, score.region, score.availability_zone): score
        for score in scores
        if score.provider == provider
    }
    touched = []
    for offer in Offer.objects.select_related("instance_type").filter(
        instance_type__provider=provider, region__in={key[1] for key in latest}
    ):
        score = latest.get((offer.instance_type.name, offer.region, offer.availability_zone))
        if score is not None:
            offer.placement_score, offer.placement_score_at = score.score, score.observed_at
            touched.append(offer)
    Offer.objects.bulk_update(touched, ["placement_score", "placement_score_at"], batch_size=BATCH_SIZE)
    return len(touched)


def placement_scores_refresh(*, provider: str, source: PriceSource, regions: list[str]) -> int | None:
    """Ask ``source`` for placement scores when the last ones are older than ``PLACEMENT_SCORE_REFRESH_HOURS``.

    The clouds limit how often an account may ask (AWS counts distinct requests per day), so this runs
    at its own, slower pace beside the price refresh; a failure keeps the last scores. Returns how many
    offers took a score, or None when it was not time (or it failed).
    """
    hours = settings.PLACEMENT_SCORE_REFRESH_HOURS
    if hours == 0:
        return None
    newest = Offer.objects.filter(instance_type__provider=provider).aggregate(Max("placement_score_at"))
    last = newest["placement_score_at__max"]
    if last is not None and timezone.now() - last < timedelta(hours=hours):
        return None
    instance_types = settings.PLACEMENT_SCORE_INSTANCE_TYPES or sorted(
        InstanceType.objects.filter(provider=provider).values_list("name", flat=True)
    )
    try:
        scores = source.fetch_placement_scores(regions=regions, instance_types=instance_types)
    except CloudError as exc:
        logger.warning("placement scores for %s failed, keeping the last ones: %s", provider, exc.message)
        return None
    return placement_scores_apply(provider=provider, scores=scores) if scores else None


# --- pool blocks --------------------------------------------------------------------


def pool_block(
    *,
    provider: str,
    region: str,
    availability_zone: str,
    instance_type: str,
    reason: str,
    seconds: int | None = None,
) -> PoolBlock:
    """Skip a pool for a cool-down (``POOL_BLOCK_SECONDS`` by default).

    A pool has one block row: blocking it again extends the block (it never
    shortens an active one) and records the latest reason.
    """
    seconds = settings.POOL_BLOCK_SECONDS if seconds is None else seconds
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    pool = {
        "provider": provider,
        "region": region,
        "availability_zone": availability_zone,
        "instance_type": instance_type,
    }
    now = timezone.now()
    until = now + timedelta(seconds=seconds)
    try:
        with transaction.atomic():
            return PoolBlock.objects.create(**pool, until=until, reason=reason)
    except IntegrityError:
        pass  # the pool has a block row already (maybe made by a concurrent call): extend it
    with transaction.atomic():
        block = PoolBlock.objects.select_for_update().get(**pool)
        block.times_blocked += 1
        block.until = max(block.until, until)
        block.reason = reason
        block.save(update_fields=["until", "reason", "times_blocked", "updated_at"])
    return block


def pool_unblock(*, provider: str, region: str, availability_zone: str, instance_type: str) -> bool:
    """End a pool's block now; returns whether it was blocked."""
    now = timezone.now()
    ended = PoolBlock.objects.filter(
        provider=provider,
        region=region,
        availability_zone=availability_zone,
        instance_type=instance_type,
        until__gt=now,
    ).update(until=now, updated_at=now)
    return ended > 0


# --- pool statistics: what the fleet sees of each pool ----------------------------------------


def _pool_stats_change(*, pool: Pool, market: str, now: datetime, change: Callable[[PoolStats], None]) -> None:
    """Apply ``change`` to the pool's row, locked, its counters decayed to ``now``.

    A pool seen for the first time gets its row with the change in one INSERT. No savepoint of
    its own inside a caller's transaction (a step's record): an error there fails both, also a
    race of two first sights of a pool (once per pool), which the caller's retry then repeats.
    """
    provider, region, zone, instance_type = pool
    key = {
        "provider": provider,
        "region": region,
        "availability_zone": zone,
        "instance_type": instance_type,
        "market": market,
    }
    with transaction.atomic(savepoint=False):
        stats = PoolStats.objects.select_for_update().filter(**key).first()
        if stats is None:
            stats = PoolStats(**key, updated_at=now)
            change(stats)
            stats.save(force_insert=True)
            return
        hours = max((now - stats.updated_at).total_seconds(), 0.0) / 3600
        factor = 0.5 ** (hours / settings.POOL_STATS_HALF_LIFE_HOURS)
        stats.exposure_seconds *= factor
        stats.preemptions *= factor
        stats.launch_attempts *= factor
        stats.refusals *= factor
        stats.updated_at = now
        change(stats)
        stats.save()


def pool_launch_record(*, pool: Pool, market: str, refused: bool, now: datetime | None = None) -> None:
    """A launch was tried in ``pool``; ``refused``: the cloud had no capacity."""
    now = now or timezone.now()

    def launched(stats: PoolStats) -> None:
        stats.launch_attempts += 1
        if refused:
            stats.refusals += 1
            stats.refusals_total += 1
            stats.last_refusal_at = now

    _pool_stats_change(pool=pool, market=market, now=now, change=launched)


def pool_lifetime_record(
    *, pool: Pool, market: str, seconds: float, preempted: bool, now: datetime | None = None
) -> None:
    """An instance in ``pool`` ran ``seconds`` and then was reclaimed (``preempted``) or ended otherwise
    (a censored lifetime: it tells how long the pool lasted at least)."""
    now = now or timezone.now()

    def ended(stats: PoolStats) -> None:
        stats.instances_seen += 1
        stats.exposure_seconds += max(seconds, 0.0)
        if preempted:
            stats.preemptions += 1
            stats.preemptions_total += 1
            stats.last_preemption_at = now

    _pool_stats_change(pool=pool, market=market, now=now, change=ended)
