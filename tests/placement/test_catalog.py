"""The bundled catalog snapshot and pool blocks."""

import json
from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import override_settings
from django.utils import timezone

from placement.models import InstanceType, Offer, PoolBlock, PriceHistory
from placement.requirements import GPU_TYPES, RequirementsSerializer
from placement.selectors import placement_candidates
from placement.services import SNAPSHOT_PATH, catalog_load_snapshot, pool_block
from tests.placement.factories import aws_price_refreshed

pytestmark = pytest.mark.django_db
# The bundled snapshot sells today's GPUs; V100s (p3) come with a trace-driven local cloud (trace.py).
SNAPSHOT_GPUS = set(GPU_TYPES) - {"V100"}


@pytest.fixture
def snapshot(db):
    return catalog_load_snapshot()


def test_the_snapshot_covers_three_clouds_regions_zones_and_every_kind_of_machine(snapshot):
    zones = defaultdict(set)
    for provider, region, zone in Offer.objects.values_list("instance_type__provider", "region", "availability_zone"):
        zones[(provider, region)].add(zone)
    for provider in ("aws", "gcp", "azure"):
        regions = [region for (p, region) in zones if p == provider]
        assert len(regions) >= 3, provider
        assert all(len(zones[(provider, region)]) >= 2 for region in regions), provider
    assert InstanceType.objects.count() >= 40
    assert set(InstanceType.objects.values_list("category", flat=True)) == {"general", "compute", "memory", "gpu"}
    assert InstanceType.objects.filter(architecture="arm64").exists()
    assert set(InstanceType.objects.exclude(gpu_type=None).values_list("gpu_type", flat=True)) == SNAPSHOT_GPUS


def test_every_snapshot_row_is_sane_and_its_sources_are_named():
    snapshot = json.loads(SNAPSHOT_PATH.read_text())
    for provider in ("aws", "gcp", "azure"):
        source = snapshot["sources"][provider]
        assert source["observed_at"] and source["on_demand"] and source["spot"] and source["risk"]
    shapes = {(t["provider"], t["name"]): t for t in snapshot["instance_types"]}
    pools = set()
    for provider, region, zone, name, spot, on_demand, bucket in snapshot["offers"]:
        assert (provider, name) in shapes
        assert Decimal("0") < Decimal(spot) < Decimal(on_demand)
        assert bucket in range(5)
        # Names the requirements accept, so any offer can be asked for by region and zone.
        assert RequirementsSerializer(data={"vcpu": 1, "memory_gb": 1, "regions": [region], "zones": [zone]}).is_valid()
        pools.add((provider, region, zone, name))
    assert len(pools) == len(snapshot["offers"])


def test_loading_twice_changes_nothing(snapshot):
    assert snapshot["created"] == snapshot["offers"] > 0
    before = list(Offer.objects.order_by("id").values())
    history = PriceHistory.objects.count()

    again = catalog_load_snapshot()

    assert (again["created"], again["updated"], again["types_created"], again["rescored"]) == (0, 0, 0, 0)
    assert again["unchanged"] == again["offers"]
    assert list(Offer.objects.order_by("id").values()) == before
    assert PriceHistory.objects.count() == history == snapshot["offers"]


def test_loading_again_keeps_prices_a_refresh_observed_since(snapshot):
    aws_price_refreshed(instance_type="m6i.large", spot_price="0.0123")

    catalog_load_snapshot()

    refreshed = Offer.objects.get(instance_type__name="m6i.large", region="us-east-1", availability_zone="us-east-1a")
    assert (refreshed.spot_price, refreshed.source) == (Decimal("0.012300"), "aws-api")


def test_changed_risk_settings_are_applied_by_the_next_load(snapshot):
    offer = Offer.objects.filter(risk_bucket=4).first()
    with override_settings(PLACEMENT_RESTART_MINUTES=60):
        counts = catalog_load_snapshot()
    offer.refresh_from_db()
    assert counts["rescored"] > 0
    assert offer.expected_cost > offer.spot_price * Decimal("1.01")


def test_the_snapshot_places_common_workloads(snapshot):
    assert placement_candidates(requirements={"vcpu": 2, "memory_gb": 4})
    for gpu_type in SNAPSHOT_GPUS:
        (best,) = placement_candidates(
            requirements={"vcpu": 4, "memory_gb": 16, "gpu_count": 1, "gpu_type": gpu_type}, limit=1
        )
        assert best.gpu_type == gpu_type
    arm = placement_candidates(requirements={"vcpu": 4, "memory_gb": 16, "architecture": "arm64"}, limit=50)
    assert {c.provider for c in arm} == {"aws", "gcp", "azure"}


# --- pool blocks ------------------------------------------------------------------------

POOL = {"provider": "aws", "region": "us-east-1", "availability_zone": "us-east-1a", "instance_type": "m6i.large"}


@override_settings(POOL_BLOCK_SECONDS=180)
def test_a_block_lasts_the_configured_cool_down():
    before = timezone.now()
    block = pool_block(**POOL, reason="spot interruption")
    assert before + timedelta(seconds=179) < block.until <= timezone.now() + timedelta(seconds=180)
    assert block.is_active


def test_blocking_a_blocked_pool_extends_its_block_instead_of_adding_rows():
    first = pool_block(**POOL, reason="spot interruption", seconds=60)
    second = pool_block(**POOL, reason="InsufficientInstanceCapacity", seconds=600)
    shorter = pool_block(**POOL, reason="again", seconds=5)

    assert PoolBlock.objects.count() == 1
    assert second.pk == first.pk == shorter.pk
    assert shorter.until == second.until > first.until  # never shortened
    assert (shorter.reason, shorter.times_blocked) == ("again", 3)


def test_an_expired_block_is_renewed_from_now():
    block = pool_block(**POOL, reason="old", seconds=60)
    PoolBlock.objects.filter(pk=block.pk).update(until=timezone.now() - timedelta(hours=1))

    renewed = pool_block(**POOL, reason="new", seconds=60)

    assert renewed.is_active and renewed.pk == block.pk
