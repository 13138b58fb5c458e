"""The arbitrage controller's view of a workload: what the policy is told a move would cost."""

from __future__ import annotations

import pytest
from django.utils import timezone

from fleet import controller
from placement.services import pool_lifetime_record
from storage.models import CheckpointStatus, WorkloadCheckpoint
from tests.factories import WorkloadFactory, WorkloadInstanceFactory
from workloads.models import WorkloadStatus

pytestmark = pytest.mark.django_db(transaction=True)
HERE = ("aws", "us-east-1", "us-east-1a", "m7i.large")


def egress_by_provider(workload) -> dict[str, set[float]]:
    observation = controller.observation_build(workload=workload, now=timezone.now(), blocked=set())
    costs: dict[str, set[float]] = {}
    for pool in observation.pools:
        costs.setdefault(pool.key.split("/")[0], set()).add(pool.egress_cost)
    return costs


def rounded(costs: set[float]) -> set[float]:
    return {round(cost, 6) for cost in costs}


def running_on_aws(storage: dict, *, candidates_on: str) -> object:
    """A workload running in HERE whose requirements now allow only ``candidates_on``."""
    workload = WorkloadFactory(
        status=WorkloadStatus.RUNNING,
        requirements={"vcpu": 2, "memory_gb": 4.0, "providers": [candidates_on]},
        config={"health_check_port": 8080, "storage": storage},
    )
    provider, region, zone, instance_type = HERE
    WorkloadInstanceFactory(
        workload=workload, provider=provider, region=region, availability_zone=zone, instance_type=instance_type
    )
    return workload


DECLARED = {"enabled": True, "quota_gb": 100, "retention_days": 30, "checkpoint_size_gb": 20}


def test_before_the_first_checkpoint_a_move_is_priced_by_the_declared_size(catalog):
    to_gcp = egress_by_provider(running_on_aws(DECLARED, candidates_on="gcp"))
    within_aws = egress_by_provider(running_on_aws(DECLARED, candidates_on="aws"))

    assert list(to_gcp) == ["gcp"] and rounded(to_gcp["gcp"]) == {1.8}  # 20 GB out of AWS at $0.09
    assert rounded(within_aws["aws"]) <= {0.0, 0.2, 0.4}  # same zone, another zone, another region
    assert len(within_aws["aws"]) > 1


def test_once_there_is_a_checkpoint_its_real_size_counts(catalog):
    workload = running_on_aws(DECLARED, candidates_on="gcp")
    WorkloadCheckpoint.objects.create(
        workload=workload, checkpoint_id="20261207T010000Z", status=CheckpointStatus.COMPLETE, manifest={},
        size_bytes=5 * 1000**3,
    )  # fmt: skip

    assert rounded(egress_by_provider(workload)["gcp"]) == {0.45}


def test_nothing_to_carry_costs_nothing_to_move(catalog):
    workload = running_on_aws({"enabled": False, "quota_gb": 10, "retention_days": 30}, candidates_on="gcp")

    assert set().union(*egress_by_provider(workload).values()) == {0.0}


def test_a_pool_whose_instances_keep_dying_is_expected_to_live_shorter(catalog):
    workload = running_on_aws({"enabled": False, "quota_gb": 10, "retention_days": 30}, candidates_on="gcp")
    observation = controller.observation_build(workload=workload, now=timezone.now(), blocked=set())
    dying, steady = observation.pools[0], observation.pools[1]
    for _ in range(5):
        pool_lifetime_record(pool=tuple(dying.key.split("/")), market="spot", seconds=600, preempted=True)

    after = {
        pool.key: pool
        for pool in controller.observation_build(workload=workload, now=timezone.now(), blocked=set()).pools
    }

    assert after[dying.key].expected_lifetime < dying.expected_lifetime / 5
    assert after[steady.key].expected_lifetime == pytest.approx(steady.expected_lifetime)
