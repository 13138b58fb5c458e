"""Egress: what reading a checkpoint in another pool costs, from the providers' published prices."""

from decimal import Decimal

from placement.egress import continent, egress_price_per_gb, egress_prices, move_cost

US_EAST_A = ("aws", "us-east-1", "us-east-1a", "p3.2xlarge")


def test_staying_in_the_zone_is_free_and_every_other_move_pays_its_tier():
    assert egress_price_per_gb(source=US_EAST_A, target=US_EAST_A) == 0
    assert egress_price_per_gb(source=US_EAST_A, target=("aws", "us-east-1", "us-east-1b", "p3.2xlarge")) == Decimal(
        "0.01"
    )
    assert egress_price_per_gb(source=US_EAST_A, target=("aws", "us-west-2", "us-west-2a", "p3.2xlarge")) == Decimal(
        "0.02"
    )
    # To another cloud: out of AWS to the internet.
    assert egress_price_per_gb(source=US_EAST_A, target=("gcp", "us-central1", "us-central1-a", "n1")) == Decimal(
        "0.09"
    )
    gcp = ("gcp", "us-central1", "us-central1-a", "n1")
    assert egress_price_per_gb(source=gcp, target=("gcp", "europe-west4", "europe-west4-a", "n1")) == Decimal("0.08")


def test_a_move_costs_the_checkpoint_size_times_the_price_and_nothing_without_a_checkpoint():
    fifty_gb = 50 * 1000**3
    target = ("aws", "us-west-2", "us-west-2a", "p3.2xlarge")
    assert move_cost(size_bytes=fifty_gb, source=US_EAST_A, target=target) == Decimal("1.000000")
    assert move_cost(size_bytes=0, source=US_EAST_A, target=target) == 0
    assert move_cost(size_bytes=fifty_gb, source=None, target=target) == 0


def test_every_catalog_region_has_a_continent_and_every_provider_its_prices():
    import json
    from pathlib import Path

    catalog = json.loads((Path(__file__).resolve().parents[2] / "placement/data/catalog.json").read_text())
    regions = {(offer[0], offer[1]) for offer in catalog["offers"]}
    assert {continent(region) for _, region in regions} <= {"north-america", "europe", "asia-pacific"}
    assert {provider for provider, _ in regions} <= set(egress_prices())
