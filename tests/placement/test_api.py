"""The placement REST API as a customer sees it: quotes and the offer catalog."""

import json
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from placement.models import Offer
from placement.services import catalog_load_snapshot, pool_block
from tests.errors import assert_error
from tests.placement.factories import aws_price_refreshed, offer

QUOTE = "/api/v1/placement/quote"
OFFERS = "/api/v1/placement/offers"


def post(client, body):
    return client.post(QUOTE, data=json.dumps(body), content_type="application/json")


@pytest.fixture
def snapshot(db):
    catalog_load_snapshot()


# --- quote ------------------------------------------------------------------------------


def test_a_quote_ranks_candidates_best_first_with_the_parts_of_their_score(api, snapshot):
    response = post(api, {"requirements": {"vcpu": 4, "memory_gb": 16}, "limit": 3})

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["count"] == 3 and [c["rank"] for c in body["candidates"]] == [1, 2, 3]
    best = body["candidates"][0]
    assert best["vcpu"] >= 4 and best["memory_gb"] >= 16 and best["gpu_count"] == 0
    assert Decimal(best["spot_price"]) < Decimal(best["on_demand_price"])
    assert Decimal(best["saving_pct"]) > 0 and best["risk_bucket"] in range(5)
    assert best["score_parts"]["expected_cost_per_hour"] == best["expected_cost_per_hour"]
    costs = [Decimal(c["expected_cost_per_hour"]) for c in body["candidates"]]
    assert costs == sorted(costs)


def test_a_gpu_quote_in_one_region_under_a_price(api, snapshot):
    response = post(
        api,
        {
            "requirements": {
                "vcpu": 4,
                "memory_gb": 16,
                "gpu_count": 1,
                "gpu_type": "L4",
                "regions": ["us-central1", "us-east-1"],
                "max_price_per_hour": "0.5",
            }
        },
    )

    assert response.status_code == 200, response.content
    candidates = response.json()["candidates"]
    assert candidates and all(c["gpu_type"] == "L4" for c in candidates)
    assert {c["region"] for c in candidates} <= {"us-central1", "us-east-1"}
    assert all(Decimal(c["spot_price"]) <= Decimal("0.5") for c in candidates)


def test_a_quote_skips_blocked_pools(api, db):
    offer("m6i.xlarge", availability_zone="us-east-1a", spot_price="0.05")
    offer("m6i.xlarge", availability_zone="us-east-1b", spot_price="0.06")
    pool_block(
        provider="aws", region="us-east-1", availability_zone="us-east-1a", instance_type="m6i.xlarge", reason="x"
    )

    candidates = post(api, {"requirements": {"vcpu": 4, "memory_gb": 16}}).json()["candidates"]

    assert [c["availability_zone"] for c in candidates] == ["us-east-1b"]


@pytest.mark.parametrize(
    ("requirements", "field"),
    [
        ({"vcpu": -2, "memory_gb": 16}, "requirements.vcpu"),
        ({"vcpu": 4, "memory_gb": -1}, "requirements.memory_gb"),
        ({"vcpu": 4, "memory_gb": 16, "gpu_count": -1}, "requirements.gpu_count"),
        ({"vcpu": 4, "memory_gb": 16, "gpu_count": 1, "gpu_type": "RTX4090"}, "requirements.gpu_type"),
        ({"vcpu": 4, "memory_gb": 16, "gpu_type": "T4"}, "requirements.gpu_count"),
        ({"vcpu": 4, "memory_gb": 16, "providers": ["aws", "ibm"]}, "requirements.providers.1"),
        ({"vcpu": 4, "memory_gb": 16, "providers": []}, "requirements.providers"),
        ({"vcpu": 4, "memory_gb": 16, "regions": ["US East!"]}, "requirements.regions.0"),
        ({"vcpu": 4, "memory_gb": 16, "architecture": "sparc"}, "requirements.architecture"),
        ({"vcpu": 10**9, "memory_gb": 16}, "requirements.vcpu"),
        ({"vcpu": 4, "memory_gb": 1e300}, "requirements.memory_gb"),
        ({"vcpu": 4, "memory_gb": 16, "max_price_per_hour": "-1"}, "requirements.max_price_per_hour"),
        ({"vcpu": 4, "memory_gb": 16, "max_price_per_hour": "1e9"}, "requirements.max_price_per_hour"),
        ({"vcpu": "4", "memory_gb": 16}, "requirements.vcpu"),
        ({"memory_gb": 16}, "requirements.vcpu"),
        ({"vcpu": 4, "memory_gb": 16, "colour": "blue"}, "requirements.colour"),
    ],
)
def test_bad_requirements_are_a_400_naming_the_field(api, snapshot, requirements, field):
    error = assert_error(post(api, {"requirements": requirements}), 400, "invalid")
    assert field in error["fields"], error
    assert error["message"].startswith(field)


@pytest.mark.parametrize(("limit", "field"), [(0, "limit"), (51, "limit"), ("5", "limit")])
def test_a_bad_limit_is_a_400(api, snapshot, limit, field):
    error = assert_error(post(api, {"requirements": {"vcpu": 1, "memory_gb": 1}, "limit": limit}), 400)
    assert field in error["fields"]


def test_non_finite_numbers_are_refused(api, snapshot):
    response = api.post(QUOTE, data='{"requirements": {"vcpu": 4, "memory_gb": NaN}}', content_type="application/json")
    assert_error(response, 400)


def test_nothing_fits_is_a_422_naming_the_requirement(api, snapshot):
    error = assert_error(post(api, {"requirements": {"vcpu": 400, "memory_gb": 16}}), 422, "no_placement")
    assert error["requirement"] == "vcpu"
    assert "400 or more vCPU" in error["message"]


def test_quotes_need_an_api_key(db):
    assert_error(APIClient().post(QUOTE, data="{}", content_type="application/json"), 401)
    assert_error(APIClient().get(OFFERS), 401)


# --- offers -----------------------------------------------------------------------------


def test_offers_are_listed_cheapest_first_and_paginated(api, snapshot):
    response = api.get(OFFERS, {"page_size": 5})

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["count"] == Offer.objects.count() and len(body["results"]) == 5 and body["next"]
    costs = [Decimal(o["expected_cost_per_hour"]) for o in body["results"]]
    assert costs == sorted(costs)
    first = body["results"][0]
    assert {"provider", "region", "availability_zone", "instance_type", "spot_price", "interruption_frequency"} <= set(
        first
    )


def test_offers_filter_by_provider_region_gpu_and_size(api, snapshot):
    body = api.get(OFFERS, {"provider": "gcp", "gpu_type": "L4", "min_vcpu": 8, "page_size": 200}).json()
    assert body["results"] and all(
        o["provider"] == "gcp" and o["gpu_type"] == "L4" and o["vcpu"] >= 8 for o in body["results"]
    )

    body = api.get(OFFERS, {"region": "westeurope", "min_memory_gb": 64, "page_size": 200}).json()
    assert body["results"] and all(o["region"] == "westeurope" and o["memory_gb"] >= 64 for o in body["results"])


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"provider": "ibm"}, "provider"),
        ({"gpu_type": "GTX1080"}, "gpu_type"),
        ({"min_vcpu": "-1"}, "min_vcpu"),
        ({"min_vcpu": "lots"}, "min_vcpu"),
        ({"min_memory_gb": "1e400"}, "min_memory_gb"),
        ({"region": "no such region!"}, "region"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_offer_filters_are_a_400_naming_the_parameter(api, snapshot, query, field):
    error = assert_error(api.get(OFFERS, query), 400)
    assert field in error["fields"]


def test_an_offer_shows_how_its_price_moved(api, db):
    made = offer("m6i.xlarge", spot_price="0.05")
    aws_price_refreshed(
        instance_type="m6i.xlarge",
        spot_price="0.0612",
        observed_at=made.observed_at.replace(year=made.observed_at.year + 1),
    )

    body = api.get(f"{OFFERS}/{made.id}").json()

    assert body["spot_price"] == "0.061200"
    assert [h["spot_price"] for h in body["history"]] == ["0.061200"]
    assert_error(api.get(f"{OFFERS}/999999"), 404)
