"""The GCP adapter, Spot and on-demand VMs (google-cloud-compute, REST transport), against the local emulator.

Nothing leaves the machine: every test checks that the SDK's requests reached the emulator.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from decimal import Decimal

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings as django_settings
from google.auth.credentials import AnonymousCredentials

from arbitrage.env import ConfigError
from placement.clouds import base, registry
from placement.clouds.base import (
    CapacityError,
    InstanceNotFound,
    InstanceRequest,
    InstanceState,
    Market,
    PermanentCloudError,
    QuotaError,
    TransientCloudError,
)
from placement.clouds.gcp import GcpCloud, cloud_error, instance_name, label, request_id
from tests.placement.gcp_emulator import GcpEmulator, parse_filter

PROJECT = "test-project"
REGION = "us-central1"
ZONE = "us-central1-a"
TOKEN = "ca-" + "0123456789abcdef" * 2
CAPACITY_MESSAGE = (
    "The zone 'projects/test-project/zones/us-central1-a' does not have enough resources available to fulfill "
    "the request.  Try a different zone, or try again later."
)


@pytest.fixture
def gcp():
    with GcpEmulator(project=PROJECT) as emulator:
        yield emulator


@pytest.fixture
def cloud(gcp: GcpEmulator) -> GcpCloud:
    return GcpCloud(project=PROJECT, credentials=AnonymousCredentials(), endpoint=gcp.endpoint, timeout=5)


def spot_request(token: str = TOKEN, *, zone: str = ZONE, tags: dict[str, str] | None = None, **kwargs):
    return InstanceRequest(
        idempotency_token=token,
        region=zone.rsplit("-", 1)[0],
        availability_zone=zone,
        instance_type="n2-standard-2",
        max_price_per_hour=Decimal("0.03"),
        tags={"workload-id": "W-42", base.MANAGED_BY_TAG: base.MANAGED_BY_VALUE} if tags is None else tags,
        env={"GREETING": "hello world", "PORT": "8080"},
        command=("python", "-m", "agent"),
        **kwargs,
    )


def token(number: int) -> str:
    return f"ca-{number:032x}"


def calls(gcp: GcpEmulator) -> list[str]:
    """The requests the emulator received: "METHOD path-under-the-project"."""
    prefix = f"/compute/v1/projects/{PROJECT}/"
    assert all(request.path.startswith(prefix) for request in gcp.requests)
    return [f"{request.method} {request.path.removeprefix(prefix)}" for request in gcp.requests]


def status(cloud: GcpCloud, info) -> base.InstanceInfo:
    return cloud.get_instance_status(info.instance_id, info.region, operation=info.operation)


# --- create and follow ------------------------------------------------------------------------------------


def test_a_spot_vm_is_created_without_waiting_and_followed_to_running(gcp: GcpEmulator, cloud: GcpCloud) -> None:
    info = cloud.create_spot_instance(spot_request())

    assert info.state is InstanceState.PENDING
    assert info.instance_id == f"{ZONE}/{TOKEN}"
    assert (info.region, info.availability_zone) == (REGION, ZONE)
    op_zone, _, op_name = info.operation.partition("/")
    assert op_zone == ZONE and f"{ZONE}/{op_name}" in gcp.operations
    assert gcp.operations[info.operation]["status"] == "RUNNING"  # the create did not wait on it

    running_op = status(cloud, info)  # the operation is still running
    assert running_op.state is InstanceState.PENDING
    assert running_op.operation == info.operation
    booting = status(cloud, info)  # the operation is done; the instance is STAGING
    assert booting.state is InstanceState.PENDING
    assert gcp.instance(TOKEN)["status"] == "STAGING"
    running = status(cloud, info)
    assert running.state is InstanceState.RUNNING
    assert running.public_ip == "127.0.0.1"
    assert running.address(8080) == "127.0.0.1:8080"
    assert running.instance_type == "n2-standard-2"
    assert running.tags == {"workload-id": "w-42", "managed-by": "compute-arbitrage"}
    assert running.launched_at is not None

    # Every call went to the emulator, one request per status check.
    operation, instance = f"zones/{ZONE}/operations/{op_name}", f"zones/{ZONE}/instances/{TOKEN}"
    assert calls(gcp) == [
        f"POST zones/{ZONE}/instances",
        f"GET {operation}",
        f"GET {operation}",
        f"GET {instance}",
        f"GET {operation}",
        f"GET {instance}",
    ]


def test_the_insert_asks_for_a_spot_vm_deleted_on_preemption_with_labels_and_the_startup_script(
    gcp: GcpEmulator, cloud: GcpCloud
) -> None:
    cloud.create_spot_instance(spot_request(tags={"Workload ID": "W/42", "managed-by": "compute-arbitrage"}))

    (body,) = gcp.inserts
    assert body["name"] == TOKEN
    assert body["machineType"] == f"zones/{ZONE}/machineTypes/n2-standard-2"
    assert body["scheduling"] == {
        "provisioningModel": "SPOT",
        "instanceTerminationAction": "DELETE",
        "automaticRestart": False,
        "onHostMaintenance": "TERMINATE",
    }
    assert body["labels"] == {"workload-id": "w-42", "managed-by": "compute-arbitrage"}
    (item,) = body["metadata"]["items"]
    assert item["key"] == "startup-script"
    assert item["value"] == base.startup_script(spot_request())
    assert "export GREETING='hello world'" in item["value"]
    assert item["value"].rstrip().endswith("exec python -m agent")
    (disk,) = body["disks"]
    assert disk["boot"] and disk["autoDelete"]
    assert disk["initializeParams"]["sourceImage"] == "projects/debian-cloud/global/images/family/debian-12"
    (interface,) = body["networkInterfaces"]
    assert interface["network"] == "global/networks/default"
    assert "subnetwork" not in interface
    assert interface["accessConfigs"] == [{"name": "External NAT", "type": "ONE_TO_ONE_NAT"}]
    insert = next(request for request in gcp.requests if request.method == "POST")
    assert insert.query["requestId"] == str(uuid.UUID(request_id(TOKEN)))


def test_the_subnetwork_image_and_private_address_come_from_the_configuration() -> None:
    with GcpEmulator(project=PROJECT, nat_ip="203.0.113.9", network_ip="127.0.0.1", boot_polls=0) as gcp:
        cloud = GcpCloud(
            project=PROJECT,
            credentials=AnonymousCredentials(),
            endpoint=gcp.endpoint,
            network="projects/host/global/networks/shared",
            subnetworks={REGION: "projects/host/regions/us-central1/subnetworks/workers"},
            image="projects/our-images/global/images/agent-v3",
            address="private",
        )
        info = cloud.create_spot_instance(spot_request())
        custom = cloud.create_spot_instance(spot_request(token(7), image_id="projects/customer/global/images/x"))
        gcp.finish()

        assert status(cloud, info).public_ip == "127.0.0.1"  # networkIP, not the 203.0.113.9 natIP
        interface = gcp.inserts[0]["networkInterfaces"][0]
        assert interface["network"] == "projects/host/global/networks/shared"
        assert interface["subnetwork"] == "projects/host/regions/us-central1/subnetworks/workers"
        assert gcp.inserts[0]["disks"][0]["initializeParams"]["sourceImage"] == (
            "projects/our-images/global/images/agent-v3"
        )
        assert gcp.inserts[1]["disks"][0]["initializeParams"]["sourceImage"] == "projects/customer/global/images/x"
        assert status(cloud, custom).state is InstanceState.RUNNING


def test_a_retried_create_finds_the_instance_it_made(gcp: GcpEmulator, cloud: GcpCloud) -> None:
    first = cloud.create_spot_instance(spot_request())
    again = cloud.create_spot_instance(spot_request())

    assert len(gcp.inserts) == 2 and len(gcp.instances) == 1  # the same requestId: the same operation
    assert (again.instance_id, again.operation) == (first.instance_id, first.operation)

    # Once the cloud has forgotten the request id, the name answers 409 alreadyExists: still the same instance.
    gcp.finish()
    gcp.forget_request_ids()
    late = cloud.create_spot_instance(spot_request())
    assert len(gcp.inserts) == 3 and list(gcp.instances) == [f"{ZONE}/{TOKEN}"]
    assert late.instance_id == first.instance_id
    assert late.state in (InstanceState.PENDING, InstanceState.RUNNING)


def test_an_on_demand_create_inserts_a_standard_vm_and_its_status_reports_on_demand(
    gcp: GcpEmulator, cloud: GcpCloud
) -> None:
    info = cloud.create_instance(spot_request(market=Market.ON_DEMAND))

    assert (info.state, info.market) == (InstanceState.PENDING, Market.ON_DEMAND)
    (body,) = gcp.inserts
    # No termination action (Compute Engine refuses one on STANDARD VMs); restarts and maintenance are its defaults.
    assert body["scheduling"] == {"provisioningModel": "STANDARD", "preemptible": False}
    assert body["name"] == TOKEN and body["labels"] == {"workload-id": "w-42", "managed-by": "compute-arbitrage"}
    assert body["metadata"]["items"][0]["value"] == base.startup_script(spot_request())
    stored = gcp.instance(TOKEN)["scheduling"]
    assert stored["provisioningModel"] == "STANDARD" and "instanceTerminationAction" not in stored
    assert (stored["preemptible"], stored["automaticRestart"]) == (False, True)

    gcp.finish()
    running = status(cloud, info)
    assert (running.state, running.market) == (InstanceState.RUNNING, Market.ON_DEMAND)
    (listed,) = cloud.list_managed_instances(REGION)
    assert (listed.instance_id, listed.market) == (info.instance_id, Market.ON_DEMAND)


def test_a_spot_vm_reads_back_as_spot(gcp: GcpEmulator, cloud: GcpCloud) -> None:
    info = cloud.create_instance(spot_request())
    gcp.finish()

    assert gcp.instance(TOKEN)["scheduling"]["provisioningModel"] == "SPOT"
    assert (info.market, status(cloud, info).market) == (Market.SPOT, Market.SPOT)
    assert [listed.market for listed in cloud.list_managed_instances(REGION)] == [Market.SPOT]


def test_a_retried_on_demand_create_finds_the_instance_it_made(gcp: GcpEmulator, cloud: GcpCloud) -> None:
    first = cloud.create_instance(spot_request(market=Market.ON_DEMAND))
    again = cloud.create_instance(spot_request(market=Market.ON_DEMAND))

    assert len(gcp.inserts) == 2 and len(gcp.instances) == 1
    assert (again.instance_id, again.operation, again.market) == (first.instance_id, first.operation, Market.ON_DEMAND)

    gcp.finish()
    gcp.forget_request_ids()  # the retry now meets 409 alreadyExists and reads the instance instead
    late = cloud.create_instance(spot_request(market=Market.ON_DEMAND))
    assert list(gcp.instances) == [f"{ZONE}/{TOKEN}"]
    assert (late.instance_id, late.market) == (first.instance_id, Market.ON_DEMAND)


def test_a_stopped_on_demand_vm_is_terminated_without_looking_for_a_preemption(
    gcp: GcpEmulator, cloud: GcpCloud
) -> None:
    info = cloud.create_instance(spot_request(market=Market.ON_DEMAND))
    gcp.finish()
    gcp.instances[f"{ZONE}/{TOKEN}"]["status"] = "TERMINATED"
    gcp.requests.clear()

    assert cloud.get_instance_status(info.instance_id, REGION).state is InstanceState.TERMINATED
    assert calls(gcp) == [f"GET zones/{ZONE}/instances/{TOKEN}"]  # only Spot VMs are preempted


def test_the_emulator_refuses_a_termination_action_on_a_standard_vm_as_compute_engine_does(gcp: GcpEmulator) -> None:
    body = {
        "name": TOKEN,
        "machineType": f"zones/{ZONE}/machineTypes/n2-standard-2",
        "scheduling": {"provisioningModel": "STANDARD", "instanceTerminationAction": "DELETE"},
    }

    status_code, answer = gcp.handle(
        "POST", f"/compute/v1/projects/{PROJECT}/zones/{ZONE}/instances", json.dumps(body).encode(), {}
    )

    assert status_code == 400 and answer["error"]["errors"][0]["reason"] == "invalid"
    assert "cannot specify a termination action" in answer["error"]["message"]
    assert gcp.instances == {}


# --- errors -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status_code", "reason", "message", "expected"),
    [
        (503, "resourceExhausted", CAPACITY_MESSAGE, CapacityError),
        (403, "quotaExceeded", "Quota 'CPUS' exceeded.  Limit: 24.0 in region us-central1.", QuotaError),
        (403, "rateLimitExceeded", "Rate Limit Exceeded", TransientCloudError),
        (503, "backendError", "Internal error. Please try again or contact Google Support.", TransientCloudError),
        (429, "rateLimitExceeded", "Too many requests", TransientCloudError),
        (
            400,
            "invalid",
            "Invalid value for field 'resource.machineType': 'zz'. Unknown machine type.",
            PermanentCloudError,
        ),
        (
            403,
            "forbidden",
            "Required 'compute.instances.create' permission for 'projects/test-project/zones/us-central1-a/instances'",
            PermanentCloudError,
        ),
        (
            404,
            "notFound",
            "The resource 'projects/test-project/global/networks/nope' was not found",
            PermanentCloudError,
        ),
    ],
)
def test_insert_errors_are_normalised_with_the_clouds_message(
    gcp: GcpEmulator, cloud: GcpCloud, status_code: int, reason: str, message: str, expected: type
) -> None:
    gcp.fail_next_insert(status_code, reason, message)

    with pytest.raises(expected) as caught:
        cloud.create_spot_instance(spot_request())

    assert type(caught.value) is expected
    assert caught.value.message == message
    assert (caught.value.provider, caught.value.code) == ("gcp", reason)
    assert gcp.instances == {}
    assert [request.method for request in gcp.requests] == ["POST"]


def test_a_missing_image_is_a_permanent_error(cloud: GcpCloud, gcp: GcpEmulator) -> None:
    gcp.images = {"projects/debian-cloud/global/images/family/debian-12"}

    with pytest.raises(PermanentCloudError, match="The referenced image resource cannot be found") as caught:
        cloud.create_spot_instance(spot_request(image_id="projects/debian-cloud/global/images/no-such-image"))
    assert caught.value.code == "invalid"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("ZONE_RESOURCE_POOL_EXHAUSTED", CapacityError),
        ("ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS", CapacityError),
        ("RESOURCE_POOL_EXHAUSTED", CapacityError),
        ("QUOTA_EXCEEDED", QuotaError),
        ("INTERNAL_ERROR", PermanentCloudError),  # the insert is over: polling cannot succeed
    ],
)
def test_a_failed_insert_operation_raises_its_normalised_error_from_the_status_check(
    gcp: GcpEmulator, cloud: GcpCloud, code: str, expected: type
) -> None:
    message = CAPACITY_MESSAGE if expected is CapacityError else f"{code}: it did not work"
    gcp.fail_next_operation(code, message)
    info = cloud.create_spot_instance(spot_request())
    assert info.state is InstanceState.PENDING  # accepted: the error comes with the operation

    assert status(cloud, info).state is InstanceState.PENDING
    with pytest.raises(expected) as caught:
        status(cloud, info)

    assert type(caught.value) is expected
    assert (caught.value.message, caught.value.code, caught.value.provider) == (message, code, "gcp")
    assert gcp.instances == {}


def test_an_unknown_instance_is_not_found(gcp: GcpEmulator, cloud: GcpCloud) -> None:
    with pytest.raises(InstanceNotFound) as caught:
        cloud.get_instance_status(f"{ZONE}/ca-{'f' * 32}", REGION)
    assert (
        caught.value.message == f"The resource 'projects/{PROJECT}/zones/{ZONE}/instances/ca-{'f' * 32}' was not found"
    )
    assert caught.value.code == "notFound"

    # Ids that are not "<zone>/<name>" of this region are nobody's, without asking the cloud.
    asked = len(gcp.requests)
    for instance_id, region in [(TOKEN, REGION), (f"{ZONE}/{TOKEN}", "europe-west4"), ("local-0123456789ab", REGION)]:
        with pytest.raises(InstanceNotFound):
            cloud.get_instance_status(instance_id, region)
    assert len(gcp.requests) == asked


def test_a_transient_503_on_a_status_check_is_retryable(gcp: GcpEmulator, cloud: GcpCloud) -> None:
    info = cloud.create_spot_instance(spot_request())
    gcp.fail_next(503, "backendError", "The service is currently unavailable.", method="GET")

    with pytest.raises(TransientCloudError) as caught:
        status(cloud, info)

    assert caught.value.retryable
    assert caught.value.message == "The service is currently unavailable."
    assert status(cloud, info).state is InstanceState.PENDING  # the next check gets through


def test_an_unreachable_endpoint_is_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when the test calls: connection refused
    cloud = GcpCloud(project=PROJECT, credentials=AnonymousCredentials(), endpoint=f"http://127.0.0.1:{port}")

    with pytest.raises(TransientCloudError, match="ConnectionError"):
        cloud.create_spot_instance(spot_request())


def test_refused_authentication_is_permanent_with_the_clouds_message(tmp_path, settings) -> None:
    with GcpEmulator(project=PROJECT, require_auth=True) as gcp:
        # No credentials at all: the cloud refuses, and anonymous credentials cannot be refreshed.
        anonymous = GcpCloud(project=PROJECT, credentials=AnonymousCredentials(), endpoint=gcp.endpoint)
        with pytest.raises(PermanentCloudError) as caught:
            anonymous.create_spot_instance(spot_request())
        assert [request.method for request in gcp.requests] == ["POST"]
        assert "authorization" not in gcp.requests[0].headers

        # A service-account key (GCP_CREDENTIALS_FILE): its bearer token is sent; a refused one is
        # refreshed and retried by google-auth, then reported with the cloud's words.
        settings.GCP_PROJECT = PROJECT
        settings.GCP_COMPUTE_ENDPOINT = gcp.endpoint
        settings.GCP_CREDENTIALS_FILE = str(service_account_key(tmp_path, token_uri=f"{gcp.endpoint}/token"))
        cloud = GcpCloud.from_settings("gcp")
        info = cloud.create_spot_instance(spot_request())
        assert info.state is InstanceState.PENDING
        assert gcp.requests[-1].headers["authorization"].startswith("Bearer ")

        message = "Request had invalid authentication credentials. Expected OAuth 2 access token."
        gcp.fail_next(401, "authError", message, times=3)
        with pytest.raises(PermanentCloudError) as caught:
            status(cloud, info)
        assert (caught.value.message, caught.value.code) == (message, "authError")


def service_account_key(tmp_path, *, token_uri: str):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    path = tmp_path / "service-account.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": PROJECT,
                "private_key_id": "0123456789abcdef",
                "private_key": pem,
                "client_email": f"arbitrage@{PROJECT}.iam.gserviceaccount.com",
                "client_id": "1234567890",
                "token_uri": token_uri,
            }
        )
    )
    return path


# --- preemption, terminate, list --------------------------------------------------------------------------


def test_a_preempted_spot_vm_reads_preempted_whether_deleted_or_still_there(gcp: GcpEmulator, cloud: GcpCloud) -> None:
    deleted = cloud.create_spot_instance(spot_request(token(1)))
    stopping = cloud.create_spot_instance(spot_request(token(2)))
    stopped = cloud.create_spot_instance(spot_request(token(3)))
    by_user = cloud.create_spot_instance(spot_request(token(4)))
    gcp.finish()

    gcp.preempt(token(1))  # termination action DELETE: the instance is gone
    gcp.preempt(token(2), leave="STOPPING")
    gcp.preempt(token(3), leave="TERMINATED")
    gcp.instances[f"{ZONE}/{token(4)}"]["status"] = "TERMINATED"  # stopped, not preempted

    for info in (deleted, stopping, stopped):
        after = status(cloud, info)
        assert after.state is InstanceState.PREEMPTED, info.instance_id
        assert after.state_reason.startswith("preempted at ")
    assert status(cloud, by_user).state is InstanceState.TERMINATED
    preempted = [op for op in gcp.operations.values() if op["operationType"] == "compute.instances.preempted"]
    assert len(preempted) == 3


def test_terminate_deletes_the_instance_and_an_unknown_one_is_fine(gcp: GcpEmulator, cloud: GcpCloud) -> None:
    info = cloud.create_spot_instance(spot_request())
    gcp.finish()

    cloud.terminate_instance(info.instance_id, REGION)
    assert gcp.instances == {}
    assert gcp.requests[-1].method == "DELETE"
    assert gcp.requests[-1].path.endswith(f"/zones/{ZONE}/instances/{TOKEN}")
    with pytest.raises(InstanceNotFound):
        cloud.get_instance_status(info.instance_id, REGION)

    cloud.terminate_instance(info.instance_id, REGION)  # already gone
    cloud.terminate_instance(f"{ZONE}/ca-{'e' * 32}", REGION)  # never existed
    cloud.terminate_instance("i-0123456789abcdef0", REGION)  # not a GCP id at all


def test_the_emulator_tells_a_test_when_vms_start_and_stop(gcp: GcpEmulator, cloud: GcpCloud) -> None:
    started, stopped = [], []
    gcp.on_insert = lambda instance: started.append(instance["name"])
    gcp.on_delete = lambda instance: stopped.append(instance["name"])
    first = cloud.create_spot_instance(spot_request(token(1)))
    cloud.create_spot_instance(spot_request(token(1)))  # a retry starts nothing
    cloud.create_spot_instance(spot_request(token(2)))

    cloud.terminate_instance(first.instance_id, REGION)
    gcp.preempt(token(2))

    assert started == [token(1), token(2)]
    assert stopped == [token(1), token(2)]


def test_a_failed_terminate_is_reported(gcp: GcpEmulator, cloud: GcpCloud) -> None:
    info = cloud.create_spot_instance(spot_request())
    gcp.fail_next(503, "backendError", "Backend Error", method="DELETE")

    with pytest.raises(TransientCloudError, match="Backend Error"):
        cloud.terminate_instance(info.instance_id, REGION)
    assert len(gcp.instances) == 1


def test_managed_instances_are_listed_by_label_in_the_region_only() -> None:
    with GcpEmulator(project=PROJECT, max_page_size=2) as gcp:  # pages of two: the SDK's pager follows them
        cloud = GcpCloud(project=PROJECT, credentials=AnonymousCredentials(), endpoint=gcp.endpoint)
        wanted = [
            cloud.create_spot_instance(spot_request(token(1), zone="us-central1-a")),
            cloud.create_spot_instance(spot_request(token(2), zone="us-central1-b")),
            cloud.create_spot_instance(spot_request(token(3), zone="us-central1-c")),
        ]
        cloud.create_spot_instance(spot_request(token(4), zone="europe-west4-a"))  # another region
        cloud.create_spot_instance(spot_request(token(5), tags={"workload-id": "x"}))  # not ours
        cloud.create_spot_instance(spot_request(token(6)))
        gcp.finish()
        gcp.instances[f"{ZONE}/{token(6)}"]["status"] = "TERMINATED"  # stopped: nothing to reconcile

        listed = cloud.list_managed_instances(REGION)

        assert sorted(info.instance_id for info in listed) == sorted(info.instance_id for info in wanted)
        assert {info.state for info in listed} == {InstanceState.RUNNING}
        assert all(info.tags[base.MANAGED_BY_TAG] == base.MANAGED_BY_VALUE for info in listed)
        lists = [request for request in gcp.requests if request.path.endswith("/aggregated/instances")]
        assert len(lists) == 3  # five labelled instances, two a page
        assert lists[0].query["filter"] == 'labels.managed-by = "compute-arbitrage"'
        assert [info.instance_id for info in cloud.list_managed_instances("europe-west4")] == [
            f"europe-west4-a/{token(4)}"
        ]
        assert cloud.list_managed_instances("asia-east1") == []


# --- configuration ----------------------------------------------------------------------------------------


def test_from_settings_needs_only_the_project_and_an_emulator_endpoint(gcp: GcpEmulator, settings) -> None:
    settings.GCP_PROJECT = PROJECT
    settings.GCP_COMPUTE_ENDPOINT = gcp.endpoint
    settings.GCP_CREDENTIALS_FILE = ""

    cloud = base.cloud_factories()["gcp"]("gcp")

    assert isinstance(cloud, GcpCloud)
    assert isinstance(cloud.credentials, AnonymousCredentials)
    assert (cloud.project, cloud.address, cloud.timeout) == (PROJECT, "public", settings.CLOUD_API_TIMEOUT_SECONDS)
    info = cloud.create_spot_instance(spot_request())
    gcp.finish()
    assert status(cloud, info).state is InstanceState.RUNNING


def test_from_settings_refuses_another_provider_or_no_project(settings) -> None:
    settings.GCP_PROJECT = PROJECT
    with pytest.raises(ConfigError, match="CLOUD_BACKENDS"):
        GcpCloud.from_settings("aws")
    settings.GCP_PROJECT = ""
    with pytest.raises(ConfigError, match="GCP_PROJECT"):
        GcpCloud.from_settings("gcp")
    settings.GCP_PROJECT = PROJECT
    settings.GCP_CREDENTIALS_FILE = "/nonexistent/key.json"
    with pytest.raises(ConfigError, match="GCP_CREDENTIALS_FILE"):
        GcpCloud.from_settings("gcp")


def test_the_registry_runs_gcp_on_the_gcp_backend(gcp: GcpEmulator, settings, monkeypatch) -> None:
    monkeypatch.setattr(base, "_clouds", {})
    monkeypatch.setattr(base, "_price_sources", {})
    settings.CLOUD_BACKENDS = {"aws": "local", "gcp": "gcp", "azure": "local"}
    settings.PRICE_SOURCES = []
    settings.GCP_PROJECT = PROJECT
    settings.GCP_COMPUTE_ENDPOINT = gcp.endpoint

    registry.register_configured_clouds()

    assert isinstance(base.get_cloud("gcp"), GcpCloud)
    assert base.get_cloud("gcp").endpoint == gcp.endpoint


def test_another_process_configured_by_the_environment_alone_runs_gcp_on_the_emulator(gcp: GcpEmulator) -> None:
    """As a Celery worker started with ``gcp.environment()`` would: the app registers GcpCloud at startup."""
    script = (
        "import django; django.setup()\n"
        "from placement.clouds import base\n"
        "from tests.placement.test_gcp_cloud import spot_request\n"
        "cloud = base.get_cloud('gcp')\n"
        "print(type(cloud).__name__, cloud.create_spot_instance(spot_request()).instance_id)\n"
    )
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", **gcp.environment()}
    for name in ("GCP_CREDENTIALS_FILE", "GOOGLE_APPLICATION_CREDENTIALS"):
        environment.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=django_settings.BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["GcpCloud", f"{ZONE}/{TOKEN}"]
    assert list(gcp.instances) == [f"{ZONE}/{TOKEN}"]


# --- the small pieces -------------------------------------------------------------------------------------


def test_names_request_ids_and_labels() -> None:
    assert instance_name(TOKEN) == TOKEN
    assert instance_name("Not A Valid Name!") == instance_name("Not A Valid Name!")
    assert instance_name("Not A Valid Name!").startswith("ca-")
    assert request_id(TOKEN) == request_id(TOKEN) != request_id(token(1))
    assert uuid.UUID(request_id(TOKEN)).version == 5
    assert label("Customer-ID") == "customer-id"
    assert label("9lives", key=True) == "k-9lives"
    assert label("a.b/c d") == "a-b-c-d"
    assert len(label("x" * 100)) == 63


@pytest.mark.parametrize(
    ("code", "message", "status_code", "expected"),
    [
        ("ZONE_RESOURCE_POOL_EXHAUSTED", "no capacity", None, CapacityError),
        ("", CAPACITY_MESSAGE, 503, CapacityError),
        ("QUOTA_EXCEEDED", "Quota 'CPUS' exceeded.", None, QuotaError),
        ("", "Quota 'GPUS_ALL_REGIONS' exceeded.  Limit: 0.0 globally.", 403, QuotaError),
        ("rateLimitExceeded", "Quota exceeded for quota metric 'Queries'", 403, TransientCloudError),
        ("", "Bad Gateway", 502, TransientCloudError),
        ("", "Deadline", 504, TransientCloudError),
        ("notFound", "gone", 404, InstanceNotFound),
        ("invalid", "bad", 400, PermanentCloudError),
        ("", "unauthenticated", 401, PermanentCloudError),
        ("forbidden", "no permission", 403, PermanentCloudError),
    ],
)
def test_error_normalisation(code: str, message: str, status_code: int | None, expected: type) -> None:
    error = cloud_error(code, message, status=status_code)
    assert type(error) is expected
    assert (error.message, error.provider) == (message, "gcp")
    assert error.code == (code or str(status_code))


def test_the_emulators_filters() -> None:
    resource = {"status": "RUNNING", "labels": {"managed-by": "compute-arbitrage"}, "name": "ca-1"}
    assert parse_filter('labels.managed-by = "compute-arbitrage"')(resource)
    assert parse_filter("labels.managed-by = compute-arbitrage")(resource)
    assert not parse_filter('labels.managed-by != "compute-arbitrage"')(resource)
    assert parse_filter('(status = "RUNNING") AND (name eq "ca-.*")')(resource)
    assert not parse_filter('(status = "RUNNING") (name ne "ca-.*")')(resource)
