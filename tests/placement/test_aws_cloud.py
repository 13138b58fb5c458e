"""The AWS adapter, spot and on demand, against a fake EC2 and SQS: moto in-process (``mock_aws``) and moto's server.

Outcomes are read back from the fake cloud with plain boto3 (or from moto's
backend), not from mocks. Errors are AWS's real error bodies, returned to the
adapter's own boto3 client by a ``before-send`` handler in place of the answer.
"""

from __future__ import annotations

import base64
import json
import socket
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from moto import mock_aws
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends
from moto.ec2.models.instances import StateReason

from arbitrage.env import ConfigError
from placement.clouds import base, registry
from placement.clouds.aws import IDEMPOTENCY_TAG, AwsCloud, instance_state
from placement.clouds.base import (
    CapacityError,
    InstanceNotFound,
    InstanceRequest,
    InstanceState,
    Market,
    PermanentCloudError,
    PriceTooLowError,
    QuotaError,
    TransientCloudError,
)
from tests.live import HealthServer
from tests.placement.aws_fake import FAKE_CREDENTIALS, FAKE_ENV, loopback_subnet, start_fake_aws

REGION = "us-east-1"
ZONE = "us-east-1b"
MANAGED = {base.MANAGED_BY_TAG: base.MANAGED_BY_VALUE, "workload-id": "wl-1"}
SPOT_REASON = ("Server.SpotInstanceTermination", "Server.SpotInstanceTermination: Spot instance termination")


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in FAKE_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def ec2(aws_credentials: None) -> Iterator[Any]:
    """A plain boto3 EC2 client on a fresh in-process moto: how the tests look at the fake cloud."""
    with mock_aws():
        yield boto3.client("ec2", region_name=REGION)


@pytest.fixture
def ami(ec2: Any) -> str:
    return ec2.register_image(Name="workload-base")["ImageId"]


@pytest.fixture
def cloud(ami: str) -> AwsCloud:
    return AwsCloud(ami_ids={REGION: ami}, timeout=5)


@pytest.fixture
def fake_aws(aws_credentials: None) -> Iterator[str]:
    """moto's server on 127.0.0.1: its endpoint URL."""
    endpoint_url, stop = start_fake_aws()
    yield endpoint_url
    stop()


def make_request(token: str = "ca-token-1", **overrides: Any) -> InstanceRequest:
    fields: dict[str, Any] = {
        "idempotency_token": token,
        "region": REGION,
        "availability_zone": ZONE,
        "instance_type": "m5.large",
        "max_price_per_hour": Decimal("0.10"),
        "tags": MANAGED,
    }
    return InstanceRequest(**{**fields, **overrides})


def described(ec2: Any, instance_id: str) -> dict[str, Any]:
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def all_instances(ec2: Any) -> list[dict[str, Any]]:
    return [instance for page in ec2.describe_instances()["Reservations"] for instance in page["Instances"]]


def reclaim(instance_id: str) -> None:
    """What AWS does when it takes the spot capacity back: terminate, with the spot reason."""
    instance = ec2_backends[DEFAULT_ACCOUNT_ID][REGION].get_instance(instance_id)
    instance.terminate()
    instance.state_reason = StateReason(SPOT_REASON[1], SPOT_REASON[0])
    instance._reason = "Service initiated"


# --- create ----------------------------------------------------------------------------------


def test_create_launches_a_tagged_one_time_spot_instance_running_the_workload(
    cloud: AwsCloud, ec2: Any, ami: str
) -> None:
    sent: list[dict[str, Any]] = []
    cloud.client(REGION).meta.events.register(
        "before-call.ec2.RunInstances", lambda params, **_: sent.append(params["body"])
    )
    request = make_request(command=("python", "-m", "agent"), env={"GREETING": "hello world"})

    created = cloud.create_spot_instance(request)

    instance = described(ec2, created.instance_id)
    assert instance["InstanceLifecycle"] == "spot"
    assert (instance["InstanceType"], instance["Placement"]["AvailabilityZone"]) == ("m5.large", ZONE)
    assert (instance["ImageId"], instance["ClientToken"]) == (ami, "ca-token-1")
    tags = {**MANAGED, "Name": "arbitrage-wl-1", IDEMPOTENCY_TAG: "ca-token-1"}
    assert {tag["Key"]: tag["Value"] for tag in instance["Tags"]} == tags
    user_data = ec2.describe_instance_attribute(InstanceId=created.instance_id, Attribute="userData")
    script = base64.b64decode(user_data["UserData"]["Value"]).decode()
    assert script == base.startup_script(request)
    assert "export GREETING='hello world'\n" in script and "exec python -m agent\n" in script
    # What the cloud was asked for (moto keeps only "spot" of the market options).
    assert sent[0]["InstanceMarketOptions.SpotOptions.MaxPrice"] == "0.10"
    assert sent[0]["InstanceMarketOptions.SpotOptions.SpotInstanceType"] == "one-time"
    assert sent[0]["InstanceMarketOptions.SpotOptions.InstanceInterruptionBehavior"] == "terminate"
    assert (created.state, created.region, created.availability_zone) == (InstanceState.PENDING, REGION, ZONE)

    status = cloud.get_instance_status(created.instance_id, REGION)
    assert status.state is InstanceState.RUNNING
    assert (created.market, status.market) == (Market.SPOT, Market.SPOT)
    assert status.public_ip and status.public_ip == instance["PublicIpAddress"]
    assert (status.instance_type, status.availability_zone, status.tags) == ("m5.large", ZONE, tags)
    assert status.launched_at == instance["LaunchTime"] and status.launched_at.tzinfo is UTC


def test_an_explicit_image_and_configured_network_are_used(ami: str, ec2: Any) -> None:
    vpc = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.1.2.0/24", AvailabilityZone=ZONE)["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="workers", Description="workers", VpcId=vpc)["GroupId"]
    ec2.create_key_pair(KeyName="ops")
    cloud = AwsCloud(
        ami_ids={REGION: "ami-not-this-one"},
        subnet_ids={ZONE: subnet},
        security_group_ids={REGION: group},
        key_name="ops",
        address="private",
    )

    created = cloud.create_spot_instance(make_request(image_id=ami))

    instance = described(ec2, created.instance_id)
    assert (instance["ImageId"], instance["SubnetId"], instance["KeyName"]) == (ami, subnet, "ops")
    assert [group["GroupId"] for group in instance["SecurityGroups"]] == [group]
    assert instance["Placement"]["AvailabilityZone"] == ZONE
    assert cloud.get_instance_status(created.instance_id, REGION).public_ip == instance["PrivateIpAddress"]


def test_a_region_without_an_ami_is_refused_before_calling_aws(ec2: Any) -> None:
    with pytest.raises(PermanentCloudError, match=r"no AMI for region 'us-east-1'.*AWS_AMI_IDS"):
        AwsCloud(ami_ids={"eu-west-1": "ami-12345678"}).create_spot_instance(make_request())
    assert all_instances(ec2) == []


def test_a_retried_create_returns_the_instance_the_token_already_launched(cloud: AwsCloud, ec2: Any) -> None:
    first = cloud.create_spot_instance(make_request("ca-same"))
    again = cloud.create_spot_instance(make_request("ca-same"))

    assert again.instance_id == first.instance_id
    assert [instance["InstanceId"] for instance in all_instances(ec2)] == [first.instance_id]
    other = cloud.create_spot_instance(make_request("ca-other"))
    assert other.instance_id != first.instance_id and len(all_instances(ec2)) == 2


def test_an_on_demand_create_launches_an_instance_without_spot_market_options(
    cloud: AwsCloud, ec2: Any, ami: str
) -> None:
    sent: list[dict[str, Any]] = []
    cloud.client(REGION).meta.events.register(
        "before-call.ec2.RunInstances", lambda params, **_: sent.append(params["body"])
    )
    request = make_request("ca-on-demand", market=Market.ON_DEMAND, command=("python", "-m", "agent"))

    created = cloud.create_instance(request)

    # What the cloud was asked for: no market options at all (EC2's way of buying on demand), no max price.
    assert not [name for name in sent[0] if name.startswith("InstanceMarketOptions")]
    assert (sent[0]["ClientToken"], sent[0]["InstanceType"]) == ("ca-on-demand", "m5.large")
    # What the fake cloud launched: an instance EC2 describes without a spot lifecycle.
    instance = described(ec2, created.instance_id)
    assert instance.get("InstanceLifecycle") != "spot"
    assert (instance["ImageId"], instance["ClientToken"], instance["Placement"]["AvailabilityZone"]) == (
        ami,
        "ca-on-demand",
        ZONE,
    )
    tags = {**MANAGED, "Name": "arbitrage-wl-1", IDEMPOTENCY_TAG: "ca-on-demand"}
    assert {tag["Key"]: tag["Value"] for tag in instance["Tags"]} == tags
    user_data = ec2.describe_instance_attribute(InstanceId=created.instance_id, Attribute="userData")
    assert base64.b64decode(user_data["UserData"]["Value"]).decode() == base.startup_script(request)
    assert created.market is Market.ON_DEMAND

    status = cloud.get_instance_status(created.instance_id, REGION)
    assert (status.state, status.market) == (InstanceState.RUNNING, Market.ON_DEMAND)
    assert [(info.instance_id, info.market) for info in cloud.list_managed_instances(REGION)] == [
        (created.instance_id, Market.ON_DEMAND)
    ]


def test_a_retried_on_demand_create_returns_the_instance_the_token_already_launched(cloud: AwsCloud, ec2: Any) -> None:
    first = cloud.create_instance(make_request("ca-same", market=Market.ON_DEMAND))
    again = cloud.create_instance(make_request("ca-same", market=Market.ON_DEMAND))

    assert again.instance_id == first.instance_id
    assert again.market is Market.ON_DEMAND
    assert [instance["InstanceId"] for instance in all_instances(ec2)] == [first.instance_id]


def test_create_spot_instance_buys_spot_whatever_the_request_says(cloud: AwsCloud, ec2: Any) -> None:
    created = cloud.create_spot_instance(make_request(market=Market.ON_DEMAND))

    assert described(ec2, created.instance_id)["InstanceLifecycle"] == "spot"
    assert created.market is Market.SPOT


# --- status, terminate, list -----------------------------------------------------------------


def test_list_managed_instances_lists_only_live_instances_tagged_managed_by_us(cloud: AwsCloud, ec2: Any) -> None:
    wanted = cloud.create_spot_instance(make_request("ca-a"))
    gone = cloud.create_spot_instance(make_request("ca-b"))
    cloud.terminate_instance(gone.instance_id, REGION)
    ec2.run_instances(ImageId=cloud.ami_ids[REGION], MinCount=1, MaxCount=1)  # not ours: no tag at all
    ec2.run_instances(
        ImageId=cloud.ami_ids[REGION],
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": base.MANAGED_BY_TAG, "Value": "someone-else"}]}
        ],
    )
    elsewhere = AwsCloud(ami_ids={"eu-west-1": "ami-12345678"})
    elsewhere.create_spot_instance(make_request("ca-c", region="eu-west-1", availability_zone="eu-west-1a"))

    listed = cloud.list_managed_instances(REGION)

    assert [info.instance_id for info in listed] == [wanted.instance_id]
    assert listed[0].state is InstanceState.RUNNING and listed[0].tags["workload-id"] == "wl-1"
    assert len(all_instances(ec2)) == 4


def test_many_statuses_are_read_in_one_describe_call_and_unknown_ids_are_left_out(cloud: AwsCloud, ec2: Any) -> None:
    created = [cloud.create_spot_instance(make_request(f"ca-many-{n}")).instance_id for n in range(5)]
    cloud.terminate_instance(created[1], REGION)
    reclaim(created[2])
    calls = []
    cloud.client(REGION).meta.events.register("before-call.ec2.DescribeInstances", lambda **_: calls.append(1))

    statuses = cloud.get_instance_statuses(created, REGION)

    assert len(calls) == 1
    assert {i: info.state for i, info in statuses.items()} == {
        created[0]: InstanceState.RUNNING,
        created[1]: InstanceState.TERMINATED,
        created[2]: InstanceState.PREEMPTED,
        created[3]: InstanceState.RUNNING,
        created[4]: InstanceState.RUNNING,
    }

    # An id AWS does not know fails a whole call: the batch is split until it stands alone.
    calls.clear()
    unknown = "i-0123456789abcdef0"
    statuses = cloud.get_instance_statuses([*created, unknown], REGION)
    assert set(statuses) == set(created) and len(calls) <= 1 + 2 * 3  # halves down to the one id


def test_an_instance_the_cloud_reclaimed_reads_as_preempted_one_we_terminated_as_terminated(
    cloud: AwsCloud, ec2: Any
) -> None:
    reclaimed = cloud.create_spot_instance(make_request("ca-reclaimed"))
    stopped = cloud.create_spot_instance(make_request("ca-stopped"))

    reclaim(reclaimed.instance_id)
    ec2.terminate_instances(InstanceIds=[stopped.instance_id])

    preempted = cloud.get_instance_status(reclaimed.instance_id, REGION)
    assert described(ec2, reclaimed.instance_id)["State"]["Name"] == "terminated"
    assert (preempted.state, preempted.state_reason) == (InstanceState.PREEMPTED, SPOT_REASON[1])
    terminated = cloud.get_instance_status(stopped.instance_id, REGION)
    assert terminated.state is InstanceState.TERMINATED
    assert terminated.state_reason == "Client.UserInitiatedShutdown: User initiated shutdown"


@pytest.mark.parametrize(
    ("state", "reason", "expected"),
    [
        ("pending", "", InstanceState.PENDING),
        ("running", "", InstanceState.RUNNING),
        ("shutting-down", "Client.UserInitiatedShutdown", InstanceState.STOPPING),
        ("shutting-down", "Server.SpotInstanceTermination", InstanceState.PREEMPTED),
        ("stopping", "Server.SpotInstanceShutdown", InstanceState.PREEMPTED),
        ("stopped", "Client.UserInitiatedShutdown", InstanceState.STOPPING),
        ("terminated", "Client.UserInitiatedShutdown", InstanceState.TERMINATED),
        ("terminated", "Client.InstanceInitiatedShutdown", InstanceState.TERMINATED),
        ("terminated", "Server.SpotInstanceTermination", InstanceState.PREEMPTED),
        ("terminated", "Server.InternalError", InstanceState.FAILED),
        ("terminated", "Client.VolumeLimitExceeded", InstanceState.FAILED),
    ],
)
def test_ec2_states_and_reasons_map_to_instance_states(state: str, reason: str, expected: InstanceState) -> None:
    assert instance_state(state, reason) is expected


def test_terminate_leaves_the_instance_terminated_and_unknown_ids_are_not_errors(cloud: AwsCloud, ec2: Any) -> None:
    created = cloud.create_spot_instance(make_request())

    cloud.terminate_instance(created.instance_id, REGION)
    cloud.terminate_instance(created.instance_id, REGION)  # again: nothing left to do

    assert described(ec2, created.instance_id)["State"]["Name"] == "terminated"
    assert cloud.get_instance_status(created.instance_id, REGION).state is InstanceState.TERMINATED
    cloud.terminate_instance("i-0123456789abcdef0", REGION)
    with pytest.raises(InstanceNotFound) as raised:
        cloud.get_instance_status("i-0123456789abcdef0", REGION)
    assert (raised.value.code, raised.value.provider) == ("InvalidInstanceID.NotFound", "aws")
    assert "i-0123456789abcdef0" in raised.value.message
    with pytest.raises(InstanceNotFound):
        cloud.get_instance_status(created.instance_id, "eu-west-1")  # ids are per region


# --- errors ----------------------------------------------------------------------------------


class _Body:
    """The raw HTTP body botocore reads an answer from."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data


def ec2_error(code: str, message: str) -> bytes:
    """EC2's XML error body, as AWS sends it."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors>"
        "<RequestID>5d5b0a8f-0c3c-4b8c-9a51-4a6c1c0f2e11</RequestID></Response>"
    ).encode()


def answer_with(cloud: AwsCloud, operation: str, status: int, body: bytes, *, times: int | None = None) -> list[str]:
    """Make AWS answer ``operation`` of the adapter's client with this error (``times`` times, or always).

    The other operations reach the fake cloud. Returns the list the attempts are recorded in.
    """
    attempts: list[str] = []

    def handler(request: Any, **_: Any) -> AWSResponse | None:
        attempts.append(request.url)
        if times is not None and len(attempts) > times:
            return None
        return AWSResponse(request.url, status, {"Content-Type": "text/xml;charset=UTF-8"}, _Body(body))

    cloud.client(REGION).meta.events.register(f"before-send.ec2.{operation}", handler)
    return attempts


def server_cloud(endpoint_url: str, **options: Any) -> AwsCloud:
    return AwsCloud(endpoint_url=endpoint_url, ami_ids={REGION: "ami-0123456789abcdef0"}, timeout=5, **options)


def server_instances(endpoint_url: str) -> list[dict[str, Any]]:
    return all_instances(boto3.client("ec2", region_name=REGION, endpoint_url=endpoint_url))


@pytest.mark.parametrize(
    ("code", "status", "message", "kind"),
    [
        (
            "InsufficientInstanceCapacity",
            500,
            "We currently do not have sufficient m5.large capacity in the Availability Zone you requested "
            "(us-east-1b). Our system will be working on provisioning additional capacity.",
            CapacityError,
        ),
        ("Unsupported", 400, "Your requested instance type (m5.large) is not supported in us-east-1b.", CapacityError),
        (
            "InstanceLimitExceeded",
            400,
            "You have requested more instances (21) than your current instance limit of 20 allows.",
            QuotaError,
        ),
        (
            "MaxSpotInstanceCountExceeded",
            400,
            "Max spot instance count exceeded",
            QuotaError,
        ),
        ("VcpuLimitExceeded", 400, "You have requested more vCPU capacity than your current vCPU limit.", QuotaError),
        (
            "SpotMaxPriceTooLow",
            400,
            "Your Spot request price of 0.001 is lower than the minimum required Spot request fulfillment price "
            "of 0.0325.",
            PriceTooLowError,
        ),
        ("RequestLimitExceeded", 503, "Request limit exceeded.", TransientCloudError),
        ("Unavailable", 503, "The server is overloaded and can't handle the request.", TransientCloudError),
        ("InternalError", 500, "An internal error has occurred.", TransientCloudError),
        ("SomethingNew", 502, "Bad gateway.", TransientCloudError),
        ("InvalidAMIID.NotFound", 400, "The image id '[ami-12345678]' does not exist", PermanentCloudError),
        ("AuthFailure", 401, "AWS was not able to validate the provided access credentials", PermanentCloudError),
        ("UnauthorizedOperation", 403, "You are not authorized to perform this operation.", PermanentCloudError),
        ("InvalidParameterValue", 400, "Value (x) for parameter instanceType is invalid.", PermanentCloudError),
        ("InvalidParameterCombination", 400, "Network interfaces and SubnetId", PermanentCloudError),
    ],
)
def test_aws_errors_are_normalised_keeping_the_clouds_code_and_message(
    fake_aws: str, code: str, status: int, message: str, kind: type[base.CloudError]
) -> None:
    cloud = server_cloud(fake_aws, max_attempts=1)
    attempts = answer_with(cloud, "RunInstances", status, ec2_error(code, message))

    with pytest.raises(kind) as raised:
        cloud.create_spot_instance(make_request())

    assert type(raised.value) is kind
    assert (raised.value.code, raised.value.message, raised.value.provider) == (code, message, "aws")
    assert len(attempts) == 1 and server_instances(fake_aws) == []


def test_no_on_demand_capacity_is_a_capacity_error_too(fake_aws: str) -> None:
    cloud = server_cloud(fake_aws, max_attempts=1)
    message = (
        "We currently do not have sufficient m5.large capacity in the Availability Zone you requested (us-east-1b). "
        "Our system will be working on provisioning additional capacity."
    )
    answer_with(cloud, "RunInstances", 500, ec2_error("InsufficientInstanceCapacity", message))

    with pytest.raises(CapacityError) as raised:
        cloud.create_instance(make_request(market=Market.ON_DEMAND))

    assert (raised.value.code, raised.value.message) == ("InsufficientInstanceCapacity", message)
    assert server_instances(fake_aws) == []


def test_throttling_is_retried_a_few_times_by_the_client(fake_aws: str) -> None:
    cloud = server_cloud(fake_aws)  # the default: up to 3 attempts
    attempts = answer_with(
        cloud, "RunInstances", 503, ec2_error("RequestLimitExceeded", "Request limit exceeded."), times=1
    )

    created = cloud.create_spot_instance(make_request())

    assert len(attempts) == 2
    assert [instance["InstanceId"] for instance in server_instances(fake_aws)] == [created.instance_id]


def test_not_found_errors_of_status_reads_are_instance_not_found(fake_aws: str) -> None:
    cloud = server_cloud(fake_aws, max_attempts=1)
    answer_with(cloud, "DescribeInstances", 400, ec2_error("InvalidInstanceID.Malformed", 'Invalid id: "i-x"'))

    with pytest.raises(InstanceNotFound, match='Invalid id: "i-x"'):
        cloud.get_instance_status("i-x", REGION)


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_endpoint_is_transient(aws_credentials: None) -> None:
    cloud = AwsCloud(endpoint_url=f"http://127.0.0.1:{free_loopback_port()}", timeout=2, max_attempts=1)

    with pytest.raises(TransientCloudError) as raised:
        cloud.get_instance_status("i-0123456789abcdef0", REGION)
    assert raised.value.code == "EndpointConnectionError"


def test_an_endpoint_that_never_answers_is_transient(aws_credentials: None) -> None:
    with socket.socket() as silent:  # accepts connections (the backlog does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        cloud = AwsCloud(endpoint_url=f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=1, max_attempts=1)

        with pytest.raises(TransientCloudError) as raised:
            cloud.list_managed_instances(REGION)
    assert raised.value.code == "ReadTimeoutError"


def test_missing_credentials_are_permanent(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    for name in (*FAKE_CREDENTIALS, "AWS_PROFILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    monkeypatch.delenv("AWS_WEB_IDENTITY_TOKEN_FILE", raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-role lookup off this machine
    cloud = AwsCloud(endpoint_url=f"http://127.0.0.1:{free_loopback_port()}", max_attempts=1)

    with pytest.raises(PermanentCloudError) as raised:
        cloud.get_instance_status("i-0123456789abcdef0", REGION)
    assert raised.value.code == "NoCredentialsError"


def test_an_idempotency_token_ec2_cannot_take_is_refused(cloud: AwsCloud) -> None:
    for token in ("", "x" * 65, "ca-ünïcode"):
        with pytest.raises(PermanentCloudError, match="idempotency token"):
            cloud.create_spot_instance(make_request(token))


# --- interruption warnings -------------------------------------------------------------------


def interruption_event(instance_id: str, time: str = "2026-03-01T12:00:00Z", **overrides: Any) -> str:
    """An "EC2 Spot Instance Interruption Warning" as EventBridge delivers it to SQS."""
    event = {
        "version": "0",
        "id": "1e5527d7-bb36-4607-3370-4164db56a40e",
        "detail-type": "EC2 Spot Instance Interruption Warning",
        "source": "aws.ec2",
        "account": DEFAULT_ACCOUNT_ID,
        "time": time,
        "region": REGION,
        "resources": [f"arn:aws:ec2:{ZONE}:instance/{instance_id}"],
        "detail": {"instance-id": instance_id, "instance-action": "terminate"},
    }
    return json.dumps({**event, **overrides})


def queue_depth(sqs: Any, queue_url: str) -> int:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)["Attributes"]
    return sum(int(attributes[name]) for name in names)


def test_interruption_warnings_are_read_from_the_regions_queue_and_consumed(ami: str) -> None:
    sqs = boto3.client("sqs", region_name=REGION)
    queue_url = sqs.create_queue(QueueName="spot-interruptions")["QueueUrl"]
    cloud = AwsCloud(ami_ids={REGION: ami}, interruption_queue_urls={REGION: queue_url})
    created = cloud.create_spot_instance(make_request())
    sqs.send_message(QueueUrl=queue_url, MessageBody=interruption_event(created.instance_id))
    rebalance = interruption_event("i-0aaaaaaaaaaaaaaaa", **{"detail-type": "EC2 Instance Rebalance Recommendation"})
    sqs.send_message(QueueUrl=queue_url, MessageBody=rebalance)
    sqs.send_message(QueueUrl=queue_url, MessageBody="not json")

    warnings = cloud.interruption_warnings(REGION)

    assert [(w.instance_id, w.region) for w in warnings] == [(created.instance_id, REGION)]
    assert warnings[0].deadline == datetime(2026, 3, 1, 12, 2, tzinfo=UTC)
    assert warnings[0].detail == {"instance-id": created.instance_id, "instance-action": "terminate"}
    assert queue_depth(sqs, queue_url) == 0  # all three consumed, none waiting to come back
    assert cloud.interruption_warnings(REGION) == []
    assert cloud.interruption_warnings("eu-west-1") == []  # no queue there


def test_a_burst_of_interruption_warnings_is_read_in_batches(ec2: Any) -> None:
    sqs = boto3.client("sqs", region_name=REGION)
    queue_url = sqs.create_queue(QueueName="spot-interruptions")["QueueUrl"]
    ids = [f"i-{n:017x}" for n in range(13)]
    for instance_id in ids:
        sqs.send_message(QueueUrl=queue_url, MessageBody=interruption_event(instance_id))
    cloud = AwsCloud(interruption_queue_urls={REGION: queue_url})
    cloud.interruption_wait_seconds = 0

    warnings = cloud.interruption_warnings(REGION)

    assert sorted(w.instance_id for w in warnings) == ids
    assert queue_depth(sqs, queue_url) == 0


def test_no_queue_configured_means_no_warnings_and_no_call(aws_credentials: None) -> None:
    cloud = AwsCloud(endpoint_url=f"http://127.0.0.1:{free_loopback_port()}")
    assert cloud.interruption_warnings(REGION) == []


# --- settings and the registry ---------------------------------------------------------------


def test_from_settings_reads_the_aws_settings(settings: Any) -> None:
    settings.AWS_EC2_ENDPOINT_URL = "http://127.0.0.1:4566"
    settings.AWS_AMI_IDS = {REGION: "ami-0abc"}
    settings.AWS_SECURITY_GROUP_IDS = {REGION: "sg-0abc"}
    settings.AWS_SUBNET_IDS = {ZONE: "subnet-0abc"}
    settings.AWS_KEY_NAME = "ops"
    settings.AWS_IAM_INSTANCE_PROFILE = "workers"
    settings.AWS_INTERRUPTION_QUEUE_URLS = {REGION: "https://sqs.us-east-1.amazonaws.com/1/q"}
    settings.CLOUD_INSTANCE_ADDRESS = "private"
    settings.CLOUD_API_TIMEOUT_SECONDS = 7

    cloud = base.cloud_factories()["aws"]("aws")

    assert isinstance(cloud, AwsCloud) and cloud.provider == "aws"
    assert (cloud.endpoint_url, cloud.key_name, cloud.instance_profile) == ("http://127.0.0.1:4566", "ops", "workers")
    assert (cloud.ami_ids, cloud.security_group_ids, cloud.subnet_ids) == (
        {REGION: "ami-0abc"},
        {REGION: "sg-0abc"},
        {ZONE: "subnet-0abc"},
    )
    assert cloud.interruption_queue_urls == {REGION: "https://sqs.us-east-1.amazonaws.com/1/q"}
    assert cloud.address == "private"
    assert (cloud.config.connect_timeout, cloud.config.read_timeout) == (7, 7)


def test_the_aws_backend_runs_only_the_aws_provider(settings: Any) -> None:
    with pytest.raises(ConfigError, match=r"CLOUD_BACKENDS.*'gcp'"):
        AwsCloud.from_settings("gcp")


def test_configuring_the_aws_backend_registers_the_adapter(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "_clouds", {})
    monkeypatch.setattr(base, "_price_sources", {})
    settings.CLOUD_BACKENDS = {"aws": "aws", "gcp": "local"}

    registry.register_configured_clouds()

    assert isinstance(base.get_cloud("aws"), AwsCloud) and base.get_cloud("gcp").provider == "gcp"


# --- moto's server on loopback ---------------------------------------------------------------


def test_instances_in_a_loopback_subnet_of_the_server_get_127_0_0_x_private_addresses(fake_aws: str) -> None:
    subnet = loopback_subnet(fake_aws, availability_zone=ZONE)
    cloud = server_cloud(fake_aws, subnet_ids={ZONE: subnet}, address="private")

    first = cloud.create_spot_instance(make_request("ca-first"))
    second = cloud.create_spot_instance(make_request("ca-second"))

    running = cloud.get_instance_status(first.instance_id, REGION)
    assert running.state is InstanceState.RUNNING
    assert (running.public_ip, cloud.get_instance_status(second.instance_id, REGION).public_ip) == (
        "127.0.0.4",
        "127.0.0.5",
    )
    # The control plane reaches a server listening at that address, as it would the instance.
    health = HealthServer(hosts=(running.public_ip,))
    port, stop = health.port, health.close
    try:
        with urllib.request.urlopen(f"http://{running.address(port)}/health", timeout=5) as response:
            assert (response.status, json.loads(response.read())) == (200, {"status": "ok"})
    finally:
        stop()


def test_interruption_warnings_from_the_servers_queue(fake_aws: str) -> None:
    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=fake_aws)
    queue_url = sqs.create_queue(QueueName="spot-interruptions")["QueueUrl"]
    assert queue_url.startswith(fake_aws)  # the adapter calls SQS there, not at AWS
    cloud = server_cloud(fake_aws, interruption_queue_urls={REGION: queue_url})
    created = cloud.create_spot_instance(make_request())
    now = datetime.now(UTC).replace(microsecond=0)
    sqs.send_message(
        QueueUrl=queue_url,
        MessageBody=interruption_event(created.instance_id, time=now.isoformat().replace("+00:00", "Z")),
    )

    warnings = cloud.interruption_warnings(REGION)

    assert [(w.instance_id, w.deadline) for w in warnings] == [(created.instance_id, now + timedelta(minutes=2))]
    assert queue_depth(sqs, queue_url) == 0
