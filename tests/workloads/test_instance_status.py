"""Statuses of instances that many workloads wait on, read in batches (workloads/instance_status.py)."""

from __future__ import annotations

from decimal import Decimal

import boto3
import pytest
from moto import mock_aws

from placement.clouds import base
from placement.clouds.aws import AwsCloud
from placement.clouds.base import InstanceNotFound, InstanceRequest, InstanceState
from tests.factories import WorkloadInstanceFactory
from tests.placement.aws_fake import FAKE_ENV
from workloads.instance_status import instance_status_read, instance_statuses_read

REGION = "us-east-1"


@pytest.fixture
def aws(monkeypatch, db):
    for name, value in FAKE_ENV.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        ami = boto3.client("ec2", region_name=REGION).register_image(Name="workload-base")["ImageId"]
        cloud = AwsCloud(ami_ids={REGION: ami}, timeout=5)
        monkeypatch.setitem(base._clouds, "aws", cloud)
        yield cloud


def launch(cloud: AwsCloud, token: str) -> str:
    request = InstanceRequest(
        idempotency_token=token,
        region=REGION,
        availability_zone="us-east-1b",
        instance_type="m5.large",
        max_price_per_hour=Decimal("0.10"),
        tags={},
    )
    instance_id = cloud.create_spot_instance(request).instance_id
    WorkloadInstanceFactory(provider="aws", region=REGION, instance_id=instance_id, healthy_at=None)
    return instance_id


def test_a_batch_read_answers_the_checks_of_many_starting_instances(aws):
    starting = [launch(aws, f"ca-batch-{n}") for n in range(6)]
    aws.terminate_instance(starting[5], REGION)
    calls = []
    aws.client(REGION).meta.events.register(
        "before-call.ec2.DescribeInstances", lambda params, **_: calls.append(params)
    )

    # What the readiness sweep does: one call for all of them.
    instance_statuses_read(provider="aws", region=REGION, instance_ids=starting)
    states = [instance_status_read(provider="aws", region=REGION, instance_id=i).state for i in starting]

    assert states == [InstanceState.RUNNING] * 5 + [InstanceState.TERMINATED]
    assert len(calls) == 1  # the runs' checks were answered from the routing KV


def test_a_check_with_nothing_fresh_reads_only_its_own_instance(aws):
    first, second = launch(aws, "ca-own-1"), launch(aws, "ca-own-2")
    calls = []
    aws.client(REGION).meta.events.register(
        "before-call.ec2.DescribeInstances", lambda params, **_: calls.append(params)
    )

    assert instance_status_read(provider="aws", region=REGION, instance_id=first).state is InstanceState.RUNNING
    assert len(calls) == 1 and first in str(calls)
    assert second not in str(calls)  # not every instance starting: with thousands, that is O(runs) per check


def test_an_instance_the_cloud_does_not_have_is_not_found(aws):
    launch(aws, "ca-batch-known")
    with pytest.raises(InstanceNotFound):
        instance_status_read(provider="aws", region=REGION, instance_id="i-0123456789abcdef0")
