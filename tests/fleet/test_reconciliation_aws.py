"""Reconciliation against a fake EC2 (moto), through the real AWS adapter."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import boto3
import pytest
from django.utils import timezone
from moto import mock_aws
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends

from fleet.reconciliation import cloud_interruption_warnings_poll, cloud_reconcile
from placement.clouds import base
from placement.clouds.aws import AwsCloud
from placement.models import ReconcileFinding
from tests.factories import WorkloadFactory, WorkloadInstanceFactory
from tests.placement.aws_fake import FAKE_ENV
from tests.placement.test_aws_cloud import interruption_event
from workloads.models import WorkloadStatus

pytestmark = pytest.mark.django_db

REGION = "us-east-1"
GRACE = 900


@pytest.fixture
def ec2(monkeypatch, settings) -> Iterator[Any]:
    """A fake EC2, the AWS adapter registered for ``aws``, and reconciliation looking at aws only."""
    for name, value in FAKE_ENV.items():
        monkeypatch.setenv(name, value)
    settings.CLOUD_BACKENDS = {"aws": "aws"}
    settings.CLOUD_REGIONS = {"aws": [REGION]}
    settings.RECONCILE_GRACE_SECONDS = GRACE
    previous = base.get_cloud("aws")
    with mock_aws():
        base.register_cloud("aws", AwsCloud(ami_ids={REGION: "ami-0abcdef1234567890"}))
        try:
            yield boto3.client("ec2", region_name=REGION)
        finally:
            base.register_cloud("aws", previous)


def launch_outside_the_system(ec2, *, minutes_ago: int) -> str:
    """A managed-by tagged instance no workload row owns, launched ``minutes_ago`` (moto's clock set back)."""
    reservation = ec2.run_instances(
        ImageId="ami-0abcdef1234567890",
        InstanceType="m5.large",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[
            {
                "ResourceType": "instance",
                "Tags": [{"Key": base.MANAGED_BY_TAG, "Value": base.MANAGED_BY_VALUE}],
            }
        ],
    )
    instance_id = reservation["Instances"][0]["InstanceId"]
    launched = timezone.now() - timedelta(minutes=minutes_ago)
    ec2_backends[DEFAULT_ACCOUNT_ID][REGION].get_instance(instance_id).launch_time = launched.strftime(
        "%Y-%m-%dT%H:%M:%S.000Z"
    )
    return instance_id


def state_of(ec2, instance_id: str) -> str:
    [reservation] = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    return reservation["Instances"][0]["State"]["Name"]


def test_a_leak_past_the_grace_period_is_terminated_and_one_inside_it_is_left_alone(ec2):
    old = launch_outside_the_system(ec2, minutes_ago=60)
    young = launch_outside_the_system(ec2, minutes_ago=2)

    report = cloud_reconcile()

    assert state_of(ec2, old) in ("shutting-down", "terminated")
    assert state_of(ec2, young) == "running"
    assert {(a.action, a.instance_id) for a in report.actions} == {("terminate", old), ("wait", young)}
    assert ReconcileFinding.objects.get(instance_id=old).outcome == ReconcileFinding.Outcome.TERMINATED
    assert ReconcileFinding.objects.get(instance_id=young).outcome == ReconcileFinding.Outcome.WAITING


def test_the_dry_run_leaves_the_fake_cloud_as_it_was(ec2):
    old = launch_outside_the_system(ec2, minutes_ago=60)

    report = cloud_reconcile(dry_run=True)

    assert [(a.action, a.instance_id) for a in report.actions] == [("terminate", old)]
    assert state_of(ec2, old) == "running"
    assert not ReconcileFinding.objects.exists()


def test_a_spot_interruption_warning_from_the_eventbridge_queue_interrupts_the_workload(
    ec2, django_capture_on_commit_callbacks
):
    sqs = boto3.client("sqs", region_name=REGION)
    queue_url = sqs.create_queue(QueueName="spot-interruptions")["QueueUrl"]
    cloud = AwsCloud(ami_ids={REGION: "ami-0abcdef1234567890"}, interruption_queue_urls={REGION: queue_url})
    cloud.interruption_wait_seconds = 0
    base.register_cloud("aws", cloud)
    instance_id = launch_outside_the_system(ec2, minutes_ago=5)
    workload = WorkloadFactory(status=WorkloadStatus.RUNNING)
    WorkloadInstanceFactory(workload=workload, availability_zone="us-east-1a", instance_id=instance_id)
    sqs.send_message(QueueUrl=queue_url, MessageBody=interruption_event(instance_id, "2026-11-28T12:00:00Z"))

    with django_capture_on_commit_callbacks(execute=False):
        interrupted = cloud_interruption_warnings_poll()

    workload.refresh_from_db()
    assert interrupted == [str(workload.id)]
    assert workload.status == WorkloadStatus.INTERRUPTED
    event = workload.events.get(name="spot_interrupt")
    assert event.detail["signal"] == "cloud" and event.detail["deadline"] == "2026-11-28T12:02:00+00:00"
    assert cloud_interruption_warnings_poll() == []  # the warning was consumed
