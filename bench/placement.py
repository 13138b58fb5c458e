"""Placement quotes on catalogs of 1 000, 10 000 and 100 000 offers, against a naive baseline.

    .venv/bin/python bench/placement.py            # SQLite in a throwaway directory
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/placement.py
                                                   # PostgreSQL, in a throwaway database beside that one

For each size it builds a synthetic catalog (realistic shape: more instance types and
more zones as the catalog grows, 95% of types offered in each zone, a few blocked
pools), runs the same seeded mix of quotes through ``placement_candidates`` and prints
p50 / p99. At 100 000 offers it also times a naive quote on every 10th quote of the
mix (load every offer into Python, filter and sort) and checks that both give the same
answer. The last line is the headline: ``placement ratio: <naive p99 / ours p99> (target > 20)``.
"""

from __future__ import annotations

import math
import random
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path

from throwaway import throwaway_database  # bench/ is the script's own directory

ROOT = Path(__file__).resolve().parent.parent
SIZES = (1_000, 10_000, 100_000)
QUOTES = 1_000
WARMUP = 50
LIMIT = 10
NAIVE_EVERY = 10
SEED = 20250628


# --- a throwaway database -----------------------------------------------------------


def setup_database() -> tuple[str, callable]:
    """Point the settings at a fresh database; returns its description and a clean-up."""
    return throwaway_database("placement")


# --- a synthetic catalog ------------------------------------------------------------

PROVIDERS = ("aws", "gcp", "azure")
SIZES_VCPU = (2, 4, 8, 16, 32, 48, 64, 96, 128, 192)
FAMILIES = (  # (kind, memory GiB per vCPU, architecture, category)
    ("gen", 4, "x86_64", "general"),
    ("cpu", 2, "x86_64", "compute"),
    ("mem", 8, "x86_64", "memory"),
    ("gen-arm", 4, "arm64", "general"),
    ("cpu-arm", 2, "arm64", "compute"),
    ("gpu", 4, "x86_64", "gpu"),
)
GPU_PRICE = {"T4": 0.35, "L4": 0.6, "A10G": 0.9, "A100": 2.9, "H100": 6.5}
GPU_TYPES = tuple(GPU_PRICE)


def _shape(n: int) -> tuple[int, int]:
    """(instance types per provider, zones per provider) for about ``n`` offers."""
    types = max(20, round(40 * math.sqrt(n / 1000)))
    zones = math.ceil(n / (len(PROVIDERS) * types * 0.95))
    return types, zones


def build_catalog(n: int, rng: random.Random) -> None:
    from django.db import connection
    from django.utils import timezone

    from placement.models import InstanceType, Offer, PoolBlock, PriceHistory
    from placement.risk import RiskModel
    from placement.services import instance_types_refresh_bounds

    PoolBlock.objects.all().delete()
    PriceHistory.objects.all().delete()
    Offer.objects.all().delete()
    InstanceType.objects.all().delete()

    types_per_provider, zones_per_provider = _shape(n)
    types = []
    for provider in PROVIDERS:
        for index in range(types_per_provider):
            kind, ratio, arch, category = FAMILIES[(index // len(SIZES_VCPU)) % len(FAMILIES)]
            generation = index // (len(SIZES_VCPU) * len(FAMILIES)) + 5
            vcpu = SIZES_VCPU[index % len(SIZES_VCPU)]
            gpu_type = GPU_TYPES[(index // len(SIZES_VCPU)) % len(GPU_TYPES)] if kind == "gpu" else None
            gpu_count = 0 if gpu_type is None else (1 if vcpu < 32 else 4 if vcpu < 96 else 8)
            types.append(
                InstanceType(
                    provider=provider,
                    name=f"{kind}{generation}.{vcpu}x",
                    category=category,
                    vcpu=vcpu,
                    memory_gb=float(vcpu * ratio),
                    gpu_count=gpu_count,
                    gpu_type=gpu_type,
                    architecture=arch,
                )
            )
    InstanceType.objects.bulk_create(types, batch_size=2000)
    types = list(InstanceType.objects.all())

    model = RiskModel.from_settings()
    pools = []
    for provider in PROVIDERS:
        regions = [f"{provider}-region-{r}" for r in range(math.ceil(zones_per_provider / 3))]
        region_factor = {region: rng.uniform(1.0, 1.3) for region in regions}
        zones = [(region, f"{region}{letter}") for region in regions for letter in "abc"][:zones_per_provider]
        for instance_type in (t for t in types if t.provider == provider):
            base = (
                instance_type.vcpu * 0.035
                + instance_type.memory_gb * 0.0045
                + instance_type.gpu_count * GPU_PRICE.get(instance_type.gpu_type or "", 0.0)
            ) * rng.uniform(0.9, 1.15)
            for region, zone in zones:
                if rng.random() < 0.95:
                    pools.append((instance_type, region, zone, base * region_factor[region]))
    rng.shuffle(pools)
    observed_at = timezone.now()
    offers = []
    for instance_type, region, zone, on_demand in pools[:n]:
        bucket = rng.choices(range(5), weights=(30, 25, 20, 15, 10))[0]
        spot = Decimal(on_demand * rng.uniform(0.2, 0.5)).quantize(Decimal("0.000001"))
        offers.append(
            Offer(
                instance_type=instance_type,
                region=region,
                availability_zone=zone,
                spot_price=spot,
                on_demand_price=Decimal(on_demand).quantize(Decimal("0.000001")),
                risk_bucket=bucket,
                expected_cost=model.expected_cost(spot_price=spot, risk_bucket=bucket),
                observed_at=observed_at,
                source="bench",
            )
        )
    assert len(offers) == n, (len(offers), n)
    Offer.objects.bulk_create(offers, batch_size=5000)
    instance_types_refresh_bounds()
    from placement.services import pool_block

    for offer in rng.sample(offers, 25):
        pool_block(
            provider=offer.instance_type.provider,
            region=offer.region,
            availability_zone=offer.availability_zone,
            instance_type=offer.instance_type.name,
            reason="bench",
            seconds=3600,
        )
    if connection.vendor == "postgresql":
        # What autovacuum does after a bulk insert: statistics for the planner, a visibility map
        # for index-only scans.
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")


# --- the quote mix ------------------------------------------------------------------


def quote_mix(rng: random.Random, n_offers: int) -> list[dict]:
    """Seeded requests shaped like real traffic: mostly small CPU work, some big, GPU, pinned or capped."""
    _, zones_per_provider = _shape(n_offers)
    regions = {p: [f"{p}-region-{r}" for r in range(math.ceil(zones_per_provider / 3))] for p in PROVIDERS}
    quotes = []
    for _ in range(QUOTES):
        roll = rng.random()
        vcpu = rng.choice((1, 2, 2, 4, 4, 8))
        req: dict = {"vcpu": vcpu, "memory_gb": float(vcpu * rng.choice((1, 2, 4)))}
        if roll < 0.15:  # big machines
            vcpu = rng.choice((16, 32, 64, 96))
            req = {"vcpu": vcpu, "memory_gb": float(vcpu * rng.choice((2, 4, 8)))}
        elif roll < 0.25:  # GPUs
            req = {
                "vcpu": 4,
                "memory_gb": 16.0,
                "gpu_count": rng.choice((1, 1, 4, 8)),
                "gpu_type": rng.choice((*GPU_TYPES, None)),
            }
        elif roll < 0.33:
            req["architecture"] = "arm64"
        if rng.random() < 0.3:
            req["providers"] = rng.sample(PROVIDERS, rng.choice((1, 2)))
        if rng.random() < 0.2:
            pool = [r for p in req.get("providers", PROVIDERS) for r in regions[p]]
            req["regions"] = rng.sample(pool, min(len(pool), rng.choice((1, 2, 3))))
        elif rng.random() < 0.05:
            provider = rng.choice(req.get("providers", PROVIDERS))
            region = rng.choice(regions[provider])
            req["zones"] = [f"{region}a", f"{region}b"]
        if rng.random() < 0.1:
            req["max_price_per_hour"] = str(Decimal(rng.uniform(0.02, 2.0)).quantize(Decimal("0.01")))
        if rng.random() < 0.02:  # nothing fits
            req = {"vcpu": 256, "memory_gb": 64.0} if rng.random() < 0.5 else {**req, "regions": ["nowhere-1"]}
        quotes.append(req)
    return quotes


def ours(req: dict) -> list[tuple]:
    from placement.errors import NoPlacement
    from placement.selectors import placement_candidates

    try:
        return [c.pool for c in placement_candidates(requirements=req, limit=LIMIT)]
    except NoPlacement:
        return []


def naive(req: dict) -> list[tuple]:
    """Every offer into Python, then filter and sort: what the optimizer avoids."""
    from placement.models import Offer
    from placement.optimizer import Requirements
    from placement.selectors import blocked_pools

    r = Requirements.from_dict(req)
    blocked = blocked_pools()
    rows = Offer.objects.values_list(
        "instance_type__provider",
        "region",
        "availability_zone",
        "instance_type__name",
        "instance_type__vcpu",
        "instance_type__memory_gb",
        "instance_type__gpu_count",
        "instance_type__gpu_type",
        "instance_type__architecture",
        "spot_price",
        "risk_bucket",
        "expected_cost",
    )
    fits = []
    for provider, region, zone, name, vcpu, memory, gpus, gpu_type, arch, spot, bucket, expected in rows:
        if (
            provider in r.providers
            and (not r.regions or region in r.regions)
            and (not r.zones or zone in r.zones)
            and arch == r.architecture
            and vcpu >= r.vcpu
            and memory >= r.memory_gb
            and (gpus == 0 if r.gpu_count == 0 else gpus >= r.gpu_count and (not r.gpu_type or gpu_type == r.gpu_type))
            and (r.max_price_per_hour is None or spot <= r.max_price_per_hour)
            and (provider, region, zone, name) not in blocked
        ):
            fits.append((expected, spot, bucket, provider, region, zone, name))
    fits.sort()
    return [(provider, region, zone, name) for _e, _s, _b, provider, region, zone, name in fits[:LIMIT]]


def timed(function, requests: list[dict]) -> tuple[list[float], list[list[tuple]]]:
    times, answers = [], []
    for req in requests:
        started = time.perf_counter()
        answers.append(function(req))
        times.append((time.perf_counter() - started) * 1000)
    return times, answers


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> int:
    description, cleanup = setup_database()
    try:
        print(f"placement bench on {description}: {QUOTES} quotes per size, limit {LIMIT}")
        p99s = {}
        for size in SIZES:
            rng = random.Random(SEED + size)
            started = time.perf_counter()
            build_catalog(size, rng)
            built = time.perf_counter() - started
            requests = quote_mix(rng, size)
            timed(ours, requests[:WARMUP])
            times, answers = timed(ours, requests)
            p99s[size] = p(times, 99)
            nothing = sum(1 for answer in answers if not answer)
            print(
                f"{size:>7} offers: p50 {p(times, 50):6.2f} ms  p99 {p99s[size]:6.2f} ms  "
                f"(no placement {nothing}, catalog built in {built:.1f} s)"
            )
        subset = requests[::NAIVE_EVERY]
        naive_times, naive_answers = timed(naive, subset)
        wrong = sum(1 for index, answer in enumerate(naive_answers) if answer != answers[index * NAIVE_EVERY])
        naive_p99 = p(naive_times, 99)
        print(
            f"naive at {SIZES[-1]} offers ({len(subset)} quotes of the same mix): "
            f"p50 {p(naive_times, 50):.2f} ms  p99 {naive_p99:.2f} ms; answers that differ from ours: {wrong}"
        )
        growth = p99s[SIZES[-1]] / p99s[SIZES[0]]
        print(f"p99({SIZES[-1]}) / p99({SIZES[0]}): {growth:.2f} (target < 3)")
        print(f"placement ratio: {naive_p99 / p99s[SIZES[-1]]:.1f} (target > 20)")
        return 1 if wrong else 0
    finally:
        cleanup()


if __name__ == "__main__":
    sys.exit(main())
