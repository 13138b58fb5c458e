"""Provisioning on the real cloud adapters, end to end: a Celery worker configured for one cloud
through its environment, the cloud's SDK talking to a local emulator of that cloud's API.

Emulated VMs do not run anything, so a small health server on 127.0.0.1 stands in for the
workload the VM's startup script would start; the emulators report 127.0.0.1 as the VM's
address, so the workflow's health checks reach it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from accounts.tokens import agent_token_for
from tests.factories import customer_with_key
from tests.live import HealthServer, wait_until
from tests.placement.aws_fake import FAKE_ENV, loopback_subnet, start_fake_aws
from tests.placement.azure_emulator import AzureEmulator
from tests.placement.gcp_emulator import GcpEmulator
from workloads.models import RunStatus, WorkflowKind, WorkflowRun, Workload, WorkloadEvent, WorkloadStatus

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def stand_in() -> Iterator[HealthServer]:
    """Answers GET /health 200 on a free loopback port: what the VM's workload would do."""
    server = HealthServer()
    yield server
    server.close()


@pytest.fixture
def gcp() -> Iterator[GcpEmulator]:
    with GcpEmulator() as emulator:
        yield emulator


def submit(provider: str, port: int, **requirements) -> Workload:
    _, key = customer_with_key()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    body = {
        "name": f"on-{provider}",
        "requirements": {"vcpu": 2, "memory_gb": 4, "providers": [provider], **requirements},
        "config": {"health_check_port": port},
    }
    response = client.post("/api/v1/workloads", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 201, response.content
    workload = Workload.objects.get(id=response.json()["id"])
    workload.api = client
    return workload


def reaches(workload: Workload, state: str, timeout: float = 90) -> None:
    def status() -> bool:
        workload.refresh_from_db()
        return workload.status == state

    wait_until(status, timeout=timeout, what=f"{workload.name} to be {state} (is {workload.status})")


def assert_only_its_own_token_in(startup_script: str, workload: Workload) -> None:
    """An instance's user data may hold its workload's token, and no secret of the control plane."""
    assert agent_token_for(workload.id) in startup_script
    for secret in (settings.SECRET_KEY, "SECRET_KEY", "DATABASE_URL", "REDIS_URL", "AWS_SECRET_ACCESS_KEY", "GCP_"):
        assert secret not in startup_script, secret


def terminate(workload: Workload) -> None:
    response = workload.api.post(f"/api/v1/workloads/{workload.id}/terminate")
    assert response.status_code in (200, 202), response.content
    reaches(workload, WorkloadStatus.TERMINATED)
    wait_until(
        lambda: WorkflowRun.objects.filter(
            workload=workload, kind=WorkflowKind.TERMINATE, status=RunStatus.SUCCEEDED
        ).exists(),
        what="the terminate run to finish",
    )


def test_a_workload_on_gcp_runs_and_its_termination_leaves_no_vm(catalog, worker_factory, gcp, stand_in):
    worker_factory(env=gcp.environment())
    workload = submit("gcp", stand_in.port)

    reaches(workload, WorkloadStatus.RUNNING)

    instance = workload.instances.get()
    assert instance.provider == "gcp" and instance.status == "RUNNING"
    vm = gcp.instances[instance.instance_id]
    assert vm["scheduling"]["provisioningModel"] == "SPOT"
    assert vm["labels"]["workload-id"] == str(workload.id)
    assert vm["labels"]["managed-by"] == "compute-arbitrage"
    metadata = {item["key"]: item["value"] for item in vm["metadata"]["items"]}
    assert_only_its_own_token_in(metadata["startup-script"], workload)

    terminate(workload)
    assert gcp.instances == {}


def test_a_gcp_zone_out_of_capacity_after_the_insert_moves_on_to_the_next_zone(catalog, worker_factory, gcp, stand_in):
    gcp.fail_next_operation("ZONE_RESOURCE_POOL_EXHAUSTED", "The zone does not have enough resources available.")
    worker_factory(env=gcp.environment())
    workload = submit("gcp", stand_in.port)

    reaches(workload, WorkloadStatus.RUNNING)

    instance = workload.instances.get()  # the refused create left no segment to bill
    refused_zone = gcp.inserts[0]["machineType"].split("/")[1]  # zones/<zone>/machineTypes/<type>
    assert len(gcp.inserts) == 2
    assert list(gcp.instances) == [instance.instance_id]
    assert not instance.instance_id.startswith(f"{refused_zone}/")
    assert WorkloadEvent.objects.filter(workload=workload, message__contains="back to find-placement").exists()
    terminate(workload)
    assert gcp.instances == {}


@pytest.fixture
def azure() -> Iterator[AzureEmulator]:
    with AzureEmulator() as emulator:
        yield emulator


def test_a_workload_on_azure_runs_and_its_termination_leaves_no_vm(catalog, worker_factory, azure, stand_in):
    worker_factory(env=azure.worker_env(regions=("eastus",)))
    workload = submit("azure", stand_in.port, regions=["eastus"])

    reaches(workload, WorkloadStatus.RUNNING)

    instance = workload.instances.get()
    assert instance.provider == "azure" and instance.status == "RUNNING"
    vm = azure.vms[instance.instance_id]
    assert vm["properties"]["priority"] == "Spot" and vm["properties"]["evictionPolicy"] == "Delete"
    assert vm["tags"]["workload-id"] == str(workload.id)

    terminate(workload)
    assert azure.vms == {}


def test_an_azure_allocation_failure_after_the_put_moves_on_to_the_next_offer(catalog, worker_factory, azure, stand_in):
    azure.fail_operation("AllocationFailed", "Allocation failed. We do not have sufficient capacity.")
    worker_factory(env=azure.worker_env(regions=("eastus",)))
    workload = submit("azure", stand_in.port, regions=["eastus"])

    reaches(workload, WorkloadStatus.RUNNING)

    instance = workload.instances.get()  # the failed allocation left no segment to bill
    assert list(azure.vms) == [instance.instance_id]  # and the failed VM resource was deleted
    rewind = WorkloadEvent.objects.get(workload=workload, message__contains="back to find-placement")
    assert "Allocation failed" in rewind.message
    terminate(workload)
    assert azure.vms == {}


# moto hands a subnet's addresses out in order from .4: the first instance in each of these
# loopback subnets answers there, so the control plane's health check (private address) lands
# on the stand-in.
AWS_ZONES = {"us-east-1a": ("127.0.0.0/24", "127.0.0.4"), "us-east-1b": ("127.0.1.0/24", "127.0.1.4")}


@pytest.fixture
def aws(monkeypatch) -> Iterator[dict[str, str]]:
    for name, value in FAKE_ENV.items():
        monkeypatch.setenv(name, value)
    endpoint, stop = start_fake_aws()
    subnets = {
        zone: loopback_subnet(endpoint, region="us-east-1", availability_zone=zone, cidr=cidr)
        for zone, (cidr, _) in AWS_ZONES.items()
    }
    yield {
        **FAKE_ENV,
        "CLOUD_BACKENDS": "aws=aws",
        "AWS_EC2_ENDPOINT_URL": endpoint,
        "AWS_AMI_IDS": "us-east-1=ami-0abcdef1234567890",
        "AWS_SUBNET_IDS": ",".join(f"{zone}={subnet}" for zone, subnet in subnets.items()),
        "CLOUD_INSTANCE_ADDRESS": "private",
    }
    stop()


def ec2_client(env: dict[str, str]):
    import boto3

    return boto3.client("ec2", region_name="us-east-1", endpoint_url=env["AWS_EC2_ENDPOINT_URL"])


def aws_instances(env: dict[str, str]) -> list[dict]:
    """The fake cloud's instances that are not terminated, read with plain boto3."""
    reservations = ec2_client(env).describe_instances()["Reservations"]
    return [
        i for r in reservations for i in r["Instances"] if i["State"]["Name"] not in ("terminated", "shutting-down")
    ]


def test_a_workload_on_aws_runs_and_its_termination_leaves_no_instance(catalog, worker_factory, aws):
    stand_in = HealthServer(hosts=tuple(address for _, address in AWS_ZONES.values()))
    try:
        worker_factory(env=aws)
        workload = submit("aws", stand_in.port, regions=["us-east-1"])

        reaches(workload, WorkloadStatus.RUNNING)

        instance = workload.instances.get()
        [ec2_instance] = aws_instances(aws)
        assert ec2_instance["InstanceId"] == instance.instance_id
        assert ec2_instance["InstanceLifecycle"] == "spot"
        tags = {tag["Key"]: tag["Value"] for tag in ec2_instance["Tags"]}
        assert tags["workload-id"] == str(workload.id) and tags["managed-by"] == "compute-arbitrage"
        assert instance.public_ip == ec2_instance["PrivateIpAddress"]
        user_data = ec2_client(aws).describe_instance_attribute(InstanceId=instance.instance_id, Attribute="userData")
        assert_only_its_own_token_in(base64.b64decode(user_data["UserData"]["Value"]).decode(), workload)

        terminate(workload)
        assert aws_instances(aws) == []
    finally:
        stand_in.close()
