"""Pool statistics: what the fleet has seen of each pool, and the estimates the policy is given."""

import math
from datetime import timedelta

import pytest
from django.utils import timezone

from placement.models import PoolStats
from placement.selectors import pool_estimate, pool_estimates
from placement.services import pool_launch_record, pool_lifetime_record

pytestmark = pytest.mark.django_db
POOL = ("aws", "us-east-1", "us-east-1a", "p3.2xlarge")
HOUR = 3600.0


def test_a_pool_never_seen_reads_as_its_catalog_bucket_says():
    calm, risky = (pool_estimate(stats=None, risk_bucket=bucket, pool=POOL) for bucket in (0, 4))
    assert calm.expected_lifetime_seconds > risky.expected_lifetime_seconds
    # <5% a month is a lifetime of years; >20% of a few months.
    assert calm.expected_lifetime_seconds > 365 * 24 * HOUR > risky.expected_lifetime_seconds > 60 * 24 * HOUR
    assert 0.05 < calm.refusal_rate < 0.2


def test_a_pool_that_keeps_dying_is_expected_to_die_soon_and_one_that_refuses_to_refuse():
    now = timezone.now()
    for _ in range(5):
        pool_lifetime_record(pool=POOL, market="spot", seconds=0.5 * HOUR, preempted=True, now=now)
        pool_launch_record(pool=POOL, market="spot", refused=True, now=now)
    estimate = pool_estimates(pools=[POOL])[POOL]
    assert estimate.expected_lifetime_seconds < 8 * HOUR  # against months for a pool never seen
    assert estimate.refusal_rate > 0.5
    assert estimate.preemptions == 5 and estimate.instances_seen == 5


def test_a_censored_lifetime_says_the_pool_lasts_at_least_that_long():
    pool_lifetime_record(pool=POOL, market="spot", seconds=5 * HOUR, preempted=True)
    short = pool_estimates(pools=[POOL])[POOL].expected_lifetime_seconds
    pool_lifetime_record(pool=POOL, market="spot", seconds=100 * HOUR, preempted=False)  # ended by the customer
    assert pool_estimates(pools=[POOL])[POOL].expected_lifetime_seconds > short


def test_old_evidence_weighs_less(settings):
    settings.POOL_STATS_HALF_LIFE_HOURS = 24
    then = timezone.now() - timedelta(days=10)
    for _ in range(10):
        pool_lifetime_record(pool=POOL, market="spot", seconds=HOUR, preempted=True, now=then)
    pool_launch_record(pool=POOL, market="spot", refused=False)  # an update now decays the row to now
    stats = PoolStats.objects.get(provider="aws", availability_zone="us-east-1a")
    assert stats.preemptions == pytest.approx(10 * 0.5**10, rel=0.01)
    assert stats.preemptions_total == 10


def test_on_demand_is_never_reclaimed():
    assert math.isinf(pool_estimate(stats=None, pool=POOL, market="on_demand").expected_lifetime_seconds)


def test_the_admin_lists_one_row_per_pool_with_its_estimates(admin_client):
    pool_lifetime_record(pool=POOL, market="spot", seconds=HOUR, preempted=True)
    page = admin_client.get("/admin/placement/poolstats/").content.decode()
    assert "aws/us-east-1/us-east-1a/p3.2xlarge (spot)" in page and "Expected lifetime" in page
    assert " h</td>" in page and "%</td>" in page
