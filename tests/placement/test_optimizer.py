"""The optimizer as its callers see it: which offers qualify, in which order, and why none do."""

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import override_settings
from django.utils import timezone

from placement.errors import InvalidRequirements, NoPlacement
from placement.models import PoolBlock
from placement.selectors import Candidate, placement_candidates
from placement.services import catalog_rescore, pool_block, pool_unblock
from tests.placement.factories import offer

pytestmark = pytest.mark.django_db


def pools(candidates):
    return [c.pool for c in candidates]


def quote(limit=10, exclude_pools=(), **requirements):
    return placement_candidates(requirements=requirements, limit=limit, exclude_pools=exclude_pools)


# --- the requirements filter ------------------------------------------------------------


def test_a_4_vcpu_16_gib_request_never_gets_a_smaller_offer():
    offer("t3.medium", vcpu=2, memory_gb=4, spot_price="0.01")
    offer("c6i.xlarge", vcpu=4, memory_gb=8, spot_price="0.02")
    offer("r6i.large", vcpu=2, memory_gb=16, spot_price="0.03")
    offer("m6i.xlarge", vcpu=4, memory_gb=16, spot_price="0.09")
    offer("m6i.2xlarge", vcpu=8, memory_gb=32, spot_price="0.15")

    candidates = quote(vcpu=4, memory_gb=16)

    assert [c.instance_type for c in candidates] == ["m6i.xlarge", "m6i.2xlarge"]
    assert all(c.vcpu >= 4 and c.memory_gb >= 16 for c in candidates)


def test_a_gpu_request_gets_only_gpu_offers_of_that_type_and_count():
    offer("m6i.xlarge", spot_price="0.05")
    offer("g4dn.xlarge", gpu_count=1, gpu_type="T4", spot_price="0.20")
    offer("g5.xlarge", gpu_count=1, gpu_type="A10G", spot_price="0.40")
    offer("g5.12xlarge", vcpu=48, memory_gb=192, gpu_count=4, gpu_type="A10G", spot_price="2.00")

    assert [c.instance_type for c in quote(vcpu=4, memory_gb=16, gpu_count=1, gpu_type="A10G")] == [
        "g5.xlarge",
        "g5.12xlarge",
    ]
    assert [c.instance_type for c in quote(vcpu=4, memory_gb=16, gpu_count=2, gpu_type="A10G")] == ["g5.12xlarge"]
    any_gpu = quote(vcpu=4, memory_gb=16, gpu_count=1)
    assert [c.gpu_type for c in any_gpu] == ["T4", "A10G", "A10G"]


def test_a_request_without_gpus_is_not_put_on_a_gpu_machine():
    offer("g4dn.xlarge", gpu_count=1, gpu_type="T4", spot_price="0.01")
    offer("m6i.xlarge", spot_price="0.09")

    assert [c.instance_type for c in quote(vcpu=4, memory_gb=16)] == ["m6i.xlarge"]


def test_architecture_is_honoured():
    offer("m6i.xlarge", spot_price="0.05")
    offer("m7g.xlarge", architecture="arm64", spot_price="0.07")

    assert [c.instance_type for c in quote(vcpu=4, memory_gb=16, architecture="arm64")] == ["m7g.xlarge"]
    assert [c.instance_type for c in quote(vcpu=4, memory_gb=16)] == ["m6i.xlarge"]


def test_allowed_providers_regions_and_zones_are_honoured():
    offer("m6i.xlarge", region="us-east-1", availability_zone="us-east-1a", spot_price="0.05")
    offer("m6i.xlarge", region="us-west-2", availability_zone="us-west-2b", spot_price="0.06")
    offer("n2-standard-4", provider="gcp", region="us-central1", availability_zone="us-central1-a", spot_price="0.04")
    offer("Standard_D4s_v5", provider="azure", region="eastus", availability_zone="eastus-1", spot_price="0.03")

    assert {c.provider for c in quote(vcpu=4, memory_gb=16, providers=["aws", "gcp"])} == {"aws", "gcp"}
    assert pools(quote(vcpu=4, memory_gb=16, regions=["us-west-2", "us-central1"])) == [
        ("gcp", "us-central1", "us-central1-a", "n2-standard-4"),
        ("aws", "us-west-2", "us-west-2b", "m6i.xlarge"),
    ]
    assert pools(quote(vcpu=4, memory_gb=16, zones=["us-east-1a"])) == [
        ("aws", "us-east-1", "us-east-1a", "m6i.xlarge")
    ]
    assert quote(vcpu=4, memory_gb=16, providers=["azure"], regions=["eastus"])[0].instance_type == "Standard_D4s_v5"


def test_a_provider_limited_to_some_regions_is_only_placed_there(settings):
    offer("m6i.xlarge", region="us-east-1", availability_zone="us-east-1a", spot_price="0.05")
    offer("m6i.xlarge", region="us-west-2", availability_zone="us-west-2b", spot_price="0.01")
    offer("m6i.xlarge", region="us-west-2", availability_zone="us-west-2a", spot_price="0.02")
    offer("n2-standard-4", provider="gcp", region="us-central1", availability_zone="us-central1-a", spot_price="0.04")
    settings.CLOUD_REGIONS = {"aws": ["us-east-1"]}

    assert pools(quote(vcpu=4, memory_gb=16)) == [
        ("gcp", "us-central1", "us-central1-a", "n2-standard-4"),
        ("aws", "us-east-1", "us-east-1a", "m6i.xlarge"),
    ]
    # The same with a blocked pool, which takes the type's own compiled query.
    pool_block(
        provider="aws", region="us-east-1", availability_zone="us-east-1a", instance_type="m6i.xlarge", reason="test"
    )
    assert pools(quote(vcpu=4, memory_gb=16)) == [("gcp", "us-central1", "us-central1-a", "n2-standard-4")]


def test_max_price_is_honoured():
    offer("m6i.xlarge", region="us-east-1", spot_price="0.050000")
    offer("m6i.xlarge", region="us-west-2", spot_price="0.050001")
    offer("m7i.xlarge", spot_price="0.09")

    candidates = quote(vcpu=4, memory_gb=16, max_price_per_hour="0.050000")

    assert pools(candidates) == [("aws", "us-east-1", "us-east-1a", "m6i.xlarge")]
    assert candidates[0].spot_price <= Decimal("0.05")


def test_the_limit_is_honoured_and_candidates_are_best_first():
    for index in range(15):
        offer(f"m{index}.xlarge", spot_price=f"0.{index + 10:02d}", risk_bucket=index % 5)

    candidates = quote(vcpu=1, memory_gb=1, limit=4)

    assert len(candidates) == 4
    costs = [c.expected_cost_per_hour for c in candidates]
    assert costs == sorted(costs)


def test_a_large_catalog_gives_the_same_answer_as_sorting_everything():
    """Many instance types (several pages of them) and many zones: the cheapest expected costs win."""
    made = []
    for index in range(120):
        region = ["us-east-1", "us-west-2"][index % 2]
        made.append(
            offer(
                f"m{index % 40}.xlarge",
                vcpu=4 + (index % 40 % 3) * 4,
                memory_gb=16,
                region=region,
                availability_zone=f"{region}{'abc'[index // 40]}",
                spot_price=Decimal("0.05") + Decimal(index % 37) / 100,
                risk_bucket=index % 5,
            )
        )

    for requirements in ({"vcpu": 4, "memory_gb": 16}, {"vcpu": 8, "memory_gb": 8, "regions": ["us-west-2"]}):
        fits = [o for o in made if o.instance_type.vcpu >= requirements["vcpu"]]
        fits = [o for o in fits if o.region in requirements.get("regions", [o.region])]
        fits.sort(
            key=lambda o: (
                o.expected_cost,
                o.spot_price,
                o.risk_bucket,
                "aws",
                o.region,
                o.availability_zone,
                o.instance_type.name,
            )
        )
        expected = [("aws", o.region, o.availability_zone, o.instance_type.name) for o in fits[:25]]
        assert pools(quote(limit=25, **requirements)) == expected


# --- the ranking ------------------------------------------------------------------------


def test_a_cheaper_but_high_risk_pool_loses_to_a_slightly_dearer_steady_one():
    # Default model: ">20%" adds 0.694% to the spot price, "<5%" 0.069%.
    offer("m6i.xlarge", availability_zone="us-east-1a", spot_price="1.000000", risk_bucket=4)
    offer("m6i.xlarge", availability_zone="us-east-1b", spot_price="1.005000", risk_bucket=0)

    best, runner_up = quote(vcpu=4, memory_gb=16)

    assert (best.availability_zone, best.risk_bucket) == ("us-east-1b", 0)
    assert best.spot_price > runner_up.spot_price
    assert best.expected_cost_per_hour < runner_up.expected_cost_per_hour


def test_a_cheaper_high_risk_pool_wins_when_the_steady_one_costs_more_than_the_risk():
    offer("m6i.xlarge", availability_zone="us-east-1a", spot_price="1.000000", risk_bucket=4)
    offer("m6i.xlarge", availability_zone="us-east-1b", spot_price="1.008000", risk_bucket=0)

    best, runner_up = quote(vcpu=4, memory_gb=16)

    assert (best.availability_zone, best.risk_bucket) == ("us-east-1a", 4)
    assert runner_up.risk_bucket == 0


def test_rarer_checkpoints_make_risk_weigh_more():
    offer("m6i.xlarge", availability_zone="us-east-1a", spot_price="1.000000", risk_bucket=4)
    offer("m6i.xlarge", availability_zone="us-east-1b", spot_price="1.008000", risk_bucket=0)
    assert quote(vcpu=4, memory_gb=16)[0].availability_zone == "us-east-1a"

    with override_settings(PLACEMENT_CHECKPOINT_MINUTES=240):
        assert catalog_rescore() == 2
        best = quote(vcpu=4, memory_gb=16)[0]

    assert best.availability_zone == "us-east-1b"
    assert best.score_parts["hours_lost_per_interruption"] == "2.1667"


def test_each_candidate_shows_its_price_saving_risk_and_score_parts():
    offer("m6i.xlarge", spot_price="0.072000", on_demand_price="0.192000", risk_bucket=2)

    (candidate,) = quote(vcpu=4, memory_gb=16)

    assert candidate.spot_price == Decimal("0.072000")
    assert candidate.on_demand_price == Decimal("0.192000")
    assert candidate.saving_pct == Decimal("62.5")
    assert candidate.risk_bucket == 2
    parts = candidate.score_parts
    assert parts["interruption_frequency"] == "10-15%"
    assert Decimal(parts["spot_price"]) + Decimal(parts["risk_cost_per_hour"]) == candidate.expected_cost_per_hour
    assert Decimal(parts["expected_cost_per_hour"]) == candidate.expected_cost_per_hour
    assert Decimal(parts["interruptions_per_hour"]) > 0


def test_ties_are_broken_the_same_way_every_time():
    for provider, name, region, zone in [
        ("gcp", "n2-standard-4", "us-central1", "us-central1-b"),
        ("aws", "m6i.xlarge", "us-east-1", "us-east-1b"),
        ("aws", "m6i.xlarge", "us-east-1", "us-east-1a"),
        ("aws", "m5.xlarge", "us-east-1", "us-east-1a"),
        ("azure", "Standard_D4s_v5", "eastus", "eastus-1"),
    ]:
        offer(name, provider=provider, region=region, availability_zone=zone, spot_price="0.05", risk_bucket=1)

    assert pools(quote(vcpu=4, memory_gb=16)) == [
        ("aws", "us-east-1", "us-east-1a", "m5.xlarge"),
        ("aws", "us-east-1", "us-east-1a", "m6i.xlarge"),
        ("aws", "us-east-1", "us-east-1b", "m6i.xlarge"),
        ("azure", "eastus", "eastus-1", "Standard_D4s_v5"),
        ("gcp", "us-central1", "us-central1-b", "n2-standard-4"),
    ]


def test_a_candidate_round_trips_through_json():
    offer("g5.xlarge", gpu_count=1, gpu_type="A10G", spot_price="0.41", risk_bucket=3)
    (candidate,) = quote(vcpu=4, memory_gb=16, gpu_count=1, gpu_type="A10G")

    stored = json.loads(json.dumps(candidate.as_dict()))

    assert stored["spot_price"] == "0.410000" and stored["gpu_type"] == "A10G"
    assert Candidate.from_dict(stored) == candidate


# --- blocked and excluded pools ---------------------------------------------------------


def test_blocked_pools_are_skipped_until_the_block_expires():
    offer("m6i.xlarge", availability_zone="us-east-1a", spot_price="0.05")
    offer("m6i.xlarge", availability_zone="us-east-1b", spot_price="0.06")
    cheapest = ("aws", "us-east-1", "us-east-1a", "m6i.xlarge")

    block = pool_block(
        provider="aws", region="us-east-1", availability_zone="us-east-1a", instance_type="m6i.xlarge", reason="spot"
    )
    assert cheapest not in pools(quote(vcpu=4, memory_gb=16))

    # The cool-down passes.
    PoolBlock.objects.filter(pk=block.pk).update(until=timezone.now() - timedelta(seconds=1))
    assert pools(quote(vcpu=4, memory_gb=16))[0] == cheapest


def test_an_unblocked_pool_is_used_again_at_once():
    offer("m6i.xlarge", spot_price="0.05")
    pool = {"provider": "aws", "region": "us-east-1", "availability_zone": "us-east-1a", "instance_type": "m6i.xlarge"}
    pool_block(**pool, reason="capacity", seconds=3600)
    with pytest.raises(NoPlacement):
        quote(vcpu=4, memory_gb=16)

    assert pool_unblock(**pool) is True
    assert len(quote(vcpu=4, memory_gb=16)) == 1
    assert pool_unblock(**pool) is False


def test_exclude_pools_are_skipped_as_well():
    offer("m6i.xlarge", availability_zone="us-east-1a", spot_price="0.05")
    offer("m6i.xlarge", availability_zone="us-east-1b", spot_price="0.06")
    offer("m7i.xlarge", availability_zone="us-east-1a", spot_price="0.07")

    candidates = quote(vcpu=4, memory_gb=16, exclude_pools=[("aws", "us-east-1", "us-east-1a", "m6i.xlarge")])

    assert pools(candidates) == [
        ("aws", "us-east-1", "us-east-1b", "m6i.xlarge"),
        ("aws", "us-east-1", "us-east-1a", "m7i.xlarge"),
    ]


# --- no placement -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requirements", "requirement", "words"),
    [
        ({"vcpu": 64, "memory_gb": 16}, "vcpu", "64 or more vCPU"),
        ({"vcpu": 4, "memory_gb": 512}, "memory_gb", "512 GiB or more memory"),
        ({"vcpu": 4, "memory_gb": 16, "gpu_count": 1, "gpu_type": "H100"}, "gpu_type", "H100"),
        ({"vcpu": 4, "memory_gb": 16, "gpu_count": 8}, "gpu_count", "8 or more GPUs"),
        ({"vcpu": 4, "memory_gb": 16, "architecture": "arm64"}, "architecture", "arm64"),
        ({"vcpu": 4, "memory_gb": 16, "providers": ["azure"]}, "providers", "azure"),
        ({"vcpu": 4, "memory_gb": 16, "regions": ["eu-west-1"]}, "regions", "eu-west-1"),
        ({"vcpu": 4, "memory_gb": 16, "zones": ["us-east-1f"]}, "zones", "us-east-1f"),
        ({"vcpu": 4, "memory_gb": 16, "max_price_per_hour": "0.01"}, "max_price_per_hour", "cheapest costs 0.050000"),
    ],
)
def test_no_placement_names_the_requirement_that_excluded_everything(requirements, requirement, words):
    offer("m6i.xlarge", spot_price="0.05")
    offer("g4dn.xlarge", gpu_count=1, gpu_type="T4", spot_price="0.20")
    offer("m7i.xlarge", provider="gcp", region="us-central1", availability_zone="us-central1-a", spot_price="0.06")

    with pytest.raises(NoPlacement) as refused:
        quote(**requirements)

    assert refused.value.requirement == requirement
    assert refused.value.status == 422 and refused.value.code == "no_placement"
    assert words in refused.value.message


def test_no_placement_when_every_fitting_pool_is_blocked_says_so():
    offer("m6i.xlarge", spot_price="0.05")
    pool_block(
        provider="aws", region="us-east-1", availability_zone="us-east-1a", instance_type="m6i.xlarge", reason="x"
    )

    with pytest.raises(NoPlacement) as refused:
        quote(vcpu=4, memory_gb=16)

    assert refused.value.requirement == "pool_blocks"


def test_an_empty_catalog_is_a_clear_no_placement():
    with pytest.raises(NoPlacement) as refused:
        quote(vcpu=1, memory_gb=1)
    assert refused.value.requirement == "catalog"


def test_invalid_requirements_are_refused_naming_the_field():
    with pytest.raises(InvalidRequirements) as refused:
        quote(vcpu=0, memory_gb=1)
    assert "vcpu" in refused.value.fields


def test_requirements_stored_with_a_workload_are_accepted_as_they_are():
    offer("m6i.xlarge", spot_price="0.05")
    stored = {
        "vcpu": 4,
        "memory_gb": 16.0,
        "gpu_count": 0,
        "gpu_type": None,
        "architecture": "x86_64",
        "providers": ["aws", "gcp", "azure"],
        "regions": [],
        "zones": [],
        "max_price_per_hour": "1.000000",
    }
    assert len(placement_candidates(requirements=stored)) == 1
