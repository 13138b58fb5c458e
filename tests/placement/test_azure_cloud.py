"""The Azure VM adapter, Spot and Regular (azure-mgmt-compute / azure-mgmt-network), against a local ARM emulator.

No network beyond loopback: every adapter talks to ``AzureEmulator`` with a static
bearer token, and ``DefaultAzureCredential`` is never constructed (an autouse fixture
makes it fail loudly if anything tries).
"""

from __future__ import annotations

import base64
import socket
from decimal import Decimal

import pytest
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

from arbitrage.env import ConfigError
from placement.clouds import base
from placement.clouds.azure import AzureCloud, StaticTokenCredential, classify, cloud_error
from placement.clouds.azure import adapter as azure_adapter
from placement.clouds.azure.resources import vm_body
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
from tests.placement.azure_emulator import DELETE_OPERATION, EVICTION_OPERATION, AzureEmulator

REGION = "eastus"
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITestKeyOnly test@example"
MANAGED = {base.MANAGED_BY_TAG: base.MANAGED_BY_VALUE}


@pytest.fixture(autouse=True)
def no_default_credential(monkeypatch):
    def refuse():
        raise AssertionError("DefaultAzureCredential must not be used in tests")

    monkeypatch.setattr(azure_adapter, "default_credential", refuse)


@pytest.fixture
def emulator():
    with AzureEmulator() as server:
        yield server


def make_cloud(emulator: AzureEmulator, **overrides) -> AzureCloud:
    options = {
        "subscription_id": emulator.subscription_id,
        "resource_group": emulator.resource_group,
        "credential": StaticTokenCredential("test-token"),
        "base_url": emulator.base_url,
        "subnet_ids": {REGION: emulator.subnet_id(REGION), "westus2": emulator.subnet_id("westus2")},
        "ssh_public_key": SSH_KEY,
        "timeout": 5,
    } | overrides
    return AzureCloud(**options)


@pytest.fixture
def cloud(emulator: AzureEmulator) -> AzureCloud:
    return make_cloud(emulator)


def make_request(name: str = "a", **overrides) -> InstanceRequest:
    fields = {
        "idempotency_token": "ca-" + name.encode().hex().ljust(32, "0")[:32],
        "region": REGION,
        "availability_zone": f"{REGION}-1",
        "instance_type": "Standard_D2s_v5",
        "max_price_per_hour": Decimal("0.0192"),
        "tags": {**MANAGED, "workload-id": "w-1"},
        "command": ("python", "-m", "agent"),
        "env": {"WORKLOAD_ID": "w-1", "GREETING": "hello world"},
    } | overrides
    return InstanceRequest(**fields)


def run_to_completion(cloud: AzureCloud, info, *, checks: int = 5):
    """Status checks until the create operation is over (each check is one operation-status request)."""
    for _ in range(checks):
        status = cloud.get_instance_status(info.instance_id, info.region, operation=info.operation)
        if status.state is not InstanceState.PENDING:
            return status
    return status


# --- create and follow ---------------------------------------------------------------------------------------------


def test_create_returns_pending_with_a_token_then_follows_the_operation_to_running(emulator, cloud) -> None:
    request = make_request()
    created = cloud.create_spot_instance(request)

    assert created.state is InstanceState.PENDING
    assert created.instance_id == request.idempotency_token
    assert created.operation  # the continuation token the workflow keeps
    assert (created.region, created.availability_zone, created.instance_type) == (REGION, "eastus-1", "Standard_D2s_v5")
    assert [method for method, _ in emulator.requests] == ["PUT"]  # did not wait on the operation

    emulator.requests.clear()
    still = cloud.get_instance_status(created.instance_id, REGION, operation=created.operation)
    assert still.state is InstanceState.PENDING
    assert "InProgress" in still.state_reason
    assert still.operation == created.operation
    assert len(emulator.requests) == 1 and "/operations/" in emulator.requests[0][1]  # one status request

    running = cloud.get_instance_status(created.instance_id, REGION, operation=created.operation)
    assert running.state is InstanceState.RUNNING
    assert running.public_ip == "127.0.0.1"
    assert running.address(8080) == "127.0.0.1:8080"
    assert (running.availability_zone, running.instance_type) == ("eastus-1", "Standard_D2s_v5")
    assert running.tags == request.tags
    assert running.launched_at is not None
    # The token is sent (over plain http, to the emulator only) on every request.
    assert set(emulator.authorizations) == {"Bearer test-token"}


def test_put_body_is_a_spot_vm_with_inline_network_and_the_startup_script(emulator, cloud) -> None:
    request = make_request()
    cloud.create_spot_instance(request)
    body = emulator.last_put_body
    properties = body["properties"]

    assert body["location"] == REGION
    assert body["zones"] == ["1"]
    assert body["tags"] == request.tags
    assert properties["priority"] == "Spot"
    assert properties["evictionPolicy"] == "Delete"
    assert properties["billingProfile"] == {"maxPrice": 0.0192}
    assert properties["hardwareProfile"] == {"vmSize": "Standard_D2s_v5"}
    assert properties["storageProfile"]["imageReference"] == {
        "publisher": "Canonical",
        "offer": "ubuntu-24_04-lts",
        "sku": "server",
        "version": "latest",
    }
    assert properties["storageProfile"]["osDisk"]["deleteOption"] == "Delete"

    os_profile = properties["osProfile"]
    assert os_profile["computerName"] == request.idempotency_token
    assert os_profile["adminUsername"] == "arbitrage"
    linux = os_profile["linuxConfiguration"]
    assert linux["disablePasswordAuthentication"] is True
    assert linux["ssh"]["publicKeys"] == [{"path": "/home/arbitrage/.ssh/authorized_keys", "keyData": SSH_KEY}]
    script = base64.b64decode(os_profile["customData"]).decode()
    assert script == base.startup_script(request)
    assert "export GREETING='hello world'" in script and "export WORKLOAD_ID=w-1" in script
    assert "exec python -m agent" in script

    network = properties["networkProfile"]
    assert network["networkApiVersion"] == "2020-11-01"
    (nic,) = network["networkInterfaceConfigurations"]
    assert nic["properties"]["deleteOption"] == "Delete"
    (ip_config,) = nic["properties"]["ipConfigurations"]
    assert ip_config["properties"]["subnet"] == {"id": emulator.subnet_id(REGION)}
    public_ip = ip_config["properties"]["publicIPAddressConfiguration"]
    assert public_ip["properties"]["deleteOption"] == "Delete"


def test_an_on_demand_create_puts_a_regular_vm_and_its_status_reports_on_demand(emulator, cloud) -> None:
    request = make_request(market=Market.ON_DEMAND)

    created = cloud.create_instance(request)

    assert (created.state, created.market) == (InstanceState.PENDING, Market.ON_DEMAND)
    sent = emulator.last_put_body["properties"]
    assert sent["priority"] == "Regular"
    assert "evictionPolicy" not in sent and "billingProfile" not in sent  # ARM refuses both on a Regular VM
    assert sent["hardwareProfile"] == {"vmSize": "Standard_D2s_v5"}
    assert base64.b64decode(sent["osProfile"]["customData"]).decode() == base.startup_script(request)
    stored = emulator.vms[request.idempotency_token]["properties"]
    assert stored["priority"] == "Regular" and "evictionPolicy" not in stored

    running = run_to_completion(cloud, created)
    assert (running.state, running.market) == (InstanceState.RUNNING, Market.ON_DEMAND)
    assert running.public_ip == "127.0.0.1" and running.tags == request.tags
    (listed,) = cloud.list_managed_instances(REGION)
    assert (listed.instance_id, listed.market) == (created.instance_id, Market.ON_DEMAND)


def test_a_spot_vm_reads_back_as_spot(emulator, cloud) -> None:
    created = cloud.create_instance(make_request())

    assert emulator.vms[created.instance_id]["properties"]["priority"] == "Spot"
    assert (created.market, run_to_completion(cloud, created).market) == (Market.SPOT, Market.SPOT)
    assert [listed.market for listed in cloud.list_managed_instances(REGION)] == [Market.SPOT]


def test_a_retried_on_demand_create_finds_the_same_vm(emulator, cloud) -> None:
    request = make_request(market=Market.ON_DEMAND)
    first = cloud.create_instance(request)
    again = cloud.create_instance(request)

    assert again.instance_id == first.instance_id
    assert list(emulator.vms) == [request.idempotency_token]
    assert run_to_completion(cloud, again).market is Market.ON_DEMAND


def test_a_create_cannot_turn_an_existing_spot_vm_into_an_on_demand_one(emulator, cloud) -> None:
    spot = cloud.create_instance(make_request())

    with pytest.raises(PermanentCloudError, match="Changing property 'priority' is not allowed") as excinfo:
        cloud.create_instance(make_request(market=Market.ON_DEMAND))

    assert excinfo.value.code == "PropertyChangeNotAllowed"
    assert emulator.vms[spot.instance_id]["properties"]["priority"] == "Spot"


def test_a_deallocated_on_demand_vm_is_terminated_without_reading_the_activity_log(emulator, cloud) -> None:
    created = cloud.create_instance(make_request(market=Market.ON_DEMAND))
    run_to_completion(cloud, created)
    emulator.deallocate(created.instance_id)
    emulator.requests.clear()

    stopped = cloud.get_instance_status(created.instance_id, REGION)

    assert (stopped.state, stopped.market) == (InstanceState.TERMINATED, Market.ON_DEMAND)
    assert not [path for _, path in emulator.requests if "Microsoft.Insights" in path]  # only Spot VMs are evicted


@pytest.mark.parametrize(
    ("spot_only", "code"),
    [
        ({"evictionPolicy": "Delete"}, "EvictionPolicyCanBeSetOnlyOnAzureSpotVirtualMachines"),
        ({"billingProfile": {"maxPrice": 0.0192}}, "MaxPriceIsSupportedOnlyForAzureSpotVirtualMachines"),
    ],
)
def test_the_emulator_refuses_spot_settings_on_a_regular_vm_as_arm_does(emulator, cloud, spot_only, code) -> None:
    body = vm_body(
        name="ca-regular",
        request=make_request(market=Market.ON_DEMAND),
        subnet_id=emulator.subnet_id(REGION),
        image="Canonical:ubuntu-24_04-lts:server:latest",
        admin_username="arbitrage",
        ssh_public_key=SSH_KEY,
    )
    body["properties"].update(spot_only)

    with pytest.raises(HttpResponseError) as excinfo:
        cloud._compute.virtual_machines.begin_create_or_update(emulator.resource_group, "ca-regular", body)

    assert (excinfo.value.status_code, excinfo.value.error.code) == (400, code)
    assert emulator.vms == {}


def test_a_regional_pool_has_no_zone_and_image_ids_are_honoured(emulator, cloud) -> None:
    cloud.create_spot_instance(make_request("r", availability_zone=REGION, image_id="Debian:debian-12:12-gen2:latest"))
    assert "zones" not in emulator.last_put_body
    assert emulator.last_put_body["properties"]["storageProfile"]["imageReference"] == {
        "publisher": "Debian",
        "offer": "debian-12",
        "sku": "12-gen2",
        "version": "latest",
    }
    image_id = (
        "/subscriptions/s/resourceGroups/images/providers/Microsoft.Compute/galleries/g/images/agent/versions/1.0.0"
    )
    cloud.create_spot_instance(make_request("i", image_id=image_id))
    assert emulator.last_put_body["properties"]["storageProfile"]["imageReference"] == {"id": image_id}


def test_a_malformed_image_or_missing_subnet_is_refused_before_calling_azure(emulator, cloud) -> None:
    with pytest.raises(PermanentCloudError, match="publisher:offer:sku:version"):
        cloud.create_spot_instance(make_request(image_id="Canonical:ubuntu"))
    with pytest.raises(PermanentCloudError, match="no subnet configured") as excinfo:
        cloud.create_spot_instance(make_request(region="northeurope", availability_zone="northeurope-2"))
    assert excinfo.value.provider == "azure"
    assert emulator.requests == []


def test_a_retried_create_finds_the_same_vm(emulator, cloud) -> None:
    request = make_request()
    first = cloud.create_spot_instance(request)
    again = cloud.create_spot_instance(request)

    assert again.instance_id == first.instance_id
    assert list(emulator.vms) == [request.idempotency_token]
    assert run_to_completion(cloud, again).state is InstanceState.RUNNING
    assert run_to_completion(cloud, first).state is InstanceState.RUNNING


def test_without_an_operation_the_vm_itself_is_read(emulator, cloud) -> None:
    created = cloud.create_spot_instance(make_request())
    assert cloud.get_instance_status(created.instance_id, REGION).state is InstanceState.PENDING  # Creating
    assert cloud.get_instance_status(created.instance_id, REGION).state is InstanceState.RUNNING


def test_an_expired_operation_falls_back_to_the_vm(emulator, cloud) -> None:
    created = cloud.create_spot_instance(make_request())
    run_to_completion(cloud, created)
    emulator.expire_operations()
    status = cloud.get_instance_status(created.instance_id, REGION, operation=created.operation)
    assert status.state is InstanceState.RUNNING


def test_private_addresses_when_configured(emulator) -> None:
    emulator.public_ip, emulator.private_ip = "127.0.0.2", "127.0.0.3"
    public = make_cloud(emulator)
    private = make_cloud(emulator, address="private")
    created = public.create_spot_instance(make_request())
    assert run_to_completion(public, created).public_ip == "127.0.0.2"
    assert private.get_instance_status(created.instance_id, REGION).public_ip == "127.0.0.3"


def test_a_vm_in_another_region_is_not_found_there(emulator, cloud) -> None:
    created = cloud.create_spot_instance(make_request())
    with pytest.raises(InstanceNotFound):
        cloud.get_instance_status(created.instance_id, "westus2")


def test_a_malformed_operation_token_is_permanent(cloud) -> None:
    with pytest.raises(PermanentCloudError) as excinfo:
        cloud.get_instance_status(make_request().idempotency_token, REGION, operation="not-a-token")
    assert excinfo.value.code == "InvalidContinuationToken"


# --- errors, normalised ----------------------------------------------------------------------------------------------

QUOTA_MESSAGE = (
    "Operation could not be completed as it results in exceeding approved LowPriorityCores quota. "
    "Location: eastus, Current Limit: 10, Current Usage: 8, Additional Required: 4."
)
PRICE_MESSAGE = (
    "Unable to perform operation 'Create VM' since the provided max price '0.0192 USD' is lower than "
    "the current spot price '0.0211 USD' for Azure Spot VM size 'Standard_D2s_v5'."
)


@pytest.mark.parametrize(
    ("status", "code", "message", "expected"),
    [
        (
            409,
            "SkuNotAvailable",
            "The requested VM size Standard_D2s_v5 is currently not available in eastus.",
            CapacityError,
        ),
        (409, "OperationNotAllowed", QUOTA_MESSAGE, QuotaError),
        (409, "QuotaExceeded", "Quota exceeded for resource type Microsoft.Compute/virtualMachines.", QuotaError),
        (409, "SpotPriceGreaterThanProvidedMaxPrice", PRICE_MESSAGE, PriceTooLowError),
        (503, "ServiceUnavailable", "The service is temporarily unavailable.", TransientCloudError),
        (429, "TooManyRequests", "The request is being throttled.", TransientCloudError),
        (500, "InternalServerError", "An internal execution error occurred.", TransientCloudError),
        (
            404,
            "ImageNotFound",
            "The platform image 'Canonical:nope:server:latest' is not available.",
            PermanentCloudError,
        ),
        (400, "InvalidParameter", "The value of parameter imageReference.sku is invalid.", PermanentCloudError),
        (404, "ResourceGroupNotFound", "Resource group 'rg-arbitrage' could not be found.", PermanentCloudError),
        (404, "NotFound", "Resource /subscriptions/s/.../subnets/default not found.", PermanentCloudError),
        (403, "AuthorizationFailed", "The client does not have authorization to perform action.", PermanentCloudError),
        (401, "InvalidAuthenticationToken", "The access token is invalid.", PermanentCloudError),
        (409, "OperationNotAllowed", "The operation is not allowed on a VM being deleted.", PermanentCloudError),
    ],
)
def test_create_errors_are_normalised(emulator, cloud, status, code, message, expected) -> None:
    emulator.fail_put(status, code, message)
    with pytest.raises(expected) as excinfo:
        cloud.create_spot_instance(make_request())
    error = excinfo.value
    assert type(error) is expected
    assert (error.message, error.code, error.provider) == (message, code, "azure")


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        (
            "AllocationFailed",
            "Allocation failed. We do not have sufficient capacity for the requested VM size.",
            CapacityError,
        ),
        ("ZonalAllocationFailed", "Allocation failed. We do not have sufficient capacity in zone 1.", CapacityError),
        ("OverconstrainedAllocationRequest", "Allocation failed. VM(s) with the following constraints.", CapacityError),
        ("SpotPriceGreaterThanProvidedMaxPrice", PRICE_MESSAGE, PriceTooLowError),
        ("OperationNotAllowed", QUOTA_MESSAGE, QuotaError),
        # A finished operation's other failures cannot be retried by checking again.
        ("InternalExecutionError", "An internal execution error occurred. Please retry later.", PermanentCloudError),
    ],
)
def test_a_failed_create_operation_raises_its_error_from_the_status_check(emulator, cloud, code, message, expected):
    emulator.fail_operation(code, message)
    created = cloud.create_spot_instance(make_request())
    assert cloud.get_instance_status(created.instance_id, REGION, operation=created.operation).state == "pending"
    with pytest.raises(expected) as excinfo:
        cloud.get_instance_status(created.instance_id, REGION, operation=created.operation)
    assert (excinfo.value.message, excinfo.value.code, excinfo.value.provider) == (message, code, "azure")
    # The failed VM read directly says the same (instance view ProvisioningState/failed/<code>).
    with pytest.raises(expected):
        cloud.get_instance_status(created.instance_id, REGION)


def test_an_unknown_vm_is_not_found(emulator, cloud) -> None:
    with pytest.raises(InstanceNotFound) as excinfo:
        cloud.get_instance_status(make_request("missing").idempotency_token, REGION)
    assert excinfo.value.code == "ResourceNotFound"
    assert "was not found" in excinfo.value.message


@pytest.mark.parametrize(("status", "code"), [(503, "ServiceUnavailable"), (429, "TooManyRequests")])
def test_a_failing_status_request_is_transient(emulator, cloud, status, code) -> None:
    created = cloud.create_spot_instance(make_request())
    emulator.fail_requests(status, code, "try again later")
    with pytest.raises(TransientCloudError) as excinfo:
        cloud.get_instance_status(created.instance_id, REGION, operation=created.operation)
    assert (excinfo.value.code, excinfo.value.message) == (code, "try again later")
    assert run_to_completion(cloud, created).state is InstanceState.RUNNING  # the next check carries on


def test_an_unreachable_endpoint_is_transient(emulator) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    cloud = make_cloud(emulator, base_url=f"http://127.0.0.1:{closed_port}", timeout=2)
    with pytest.raises(TransientCloudError):
        cloud.create_spot_instance(make_request())
    with pytest.raises(TransientCloudError):
        cloud.list_managed_instances(REGION)


def test_cloud_error_covers_sdk_errors_without_an_answer() -> None:
    assert isinstance(cloud_error(ServiceRequestError("connection refused")), TransientCloudError)
    assert isinstance(cloud_error(ServiceResponseError("read timed out")), TransientCloudError)
    from azure.core.exceptions import ClientAuthenticationError

    auth = cloud_error(ClientAuthenticationError("EnvironmentCredential authentication unavailable"))
    assert isinstance(auth, PermanentCloudError) and auth.code == "AuthenticationFailed"
    assert isinstance(cloud_error(HttpResponseError("no response")), TransientCloudError)
    # ARM sometimes wraps the reason in details.
    wrapped = classify("BadRequest", "see details", status=400, details=[("ZonalAllocationFailed", "no room")])
    assert isinstance(wrapped, CapacityError) and (wrapped.code, wrapped.message) == (
        "ZonalAllocationFailed",
        "no room",
    )


# --- eviction, terminate, list --------------------------------------------------------------------------------------


def test_an_evicted_vm_is_preempted(emulator, cloud) -> None:
    created = cloud.create_spot_instance(make_request())
    run_to_completion(cloud, created)
    emulator.evict(created.instance_id, deleted=False)  # the platform is deleting it
    deleting = cloud.get_instance_status(created.instance_id, REGION)
    assert (deleting.state, deleting.state_reason) == (InstanceState.PREEMPTED, "Spot eviction")

    emulator.evict(created.instance_id)  # and now it is gone
    assert created.instance_id not in emulator.vms
    gone = cloud.get_instance_status(created.instance_id, REGION, operation=created.operation)
    assert gone.state is InstanceState.PREEMPTED
    assert EVICTION_OPERATION in {event["operationName"]["value"] for event in emulator.activity_log}


def test_terminate_deletes_the_vm_without_waiting_and_it_is_not_an_eviction(emulator, cloud) -> None:
    created = cloud.create_spot_instance(make_request())
    run_to_completion(cloud, created)
    emulator.requests.clear()

    cloud.terminate_instance(created.instance_id, REGION)

    assert [method for method, _ in emulator.requests] == ["DELETE"]
    assert emulator.vms == {}
    assert [event["operationName"]["value"] for event in emulator.activity_log] == [DELETE_OPERATION]
    with pytest.raises(InstanceNotFound):
        cloud.get_instance_status(created.instance_id, REGION)
    cloud.terminate_instance(created.instance_id, REGION)  # again: already gone, fine


def test_terminate_of_an_unknown_vm_is_fine(emulator, cloud) -> None:
    cloud.terminate_instance(make_request("never").idempotency_token, REGION)
    emulator.fail_requests(404, "ResourceNotFound", "gone")
    cloud.terminate_instance(make_request("never").idempotency_token, REGION)


def test_terminate_errors_are_raised(emulator, cloud) -> None:
    emulator.fail_requests(403, "AuthorizationFailed", "not allowed to delete")
    with pytest.raises(PermanentCloudError, match="not allowed to delete"):
        cloud.terminate_instance(make_request().idempotency_token, REGION)


def test_list_managed_instances_by_tag_and_region(emulator, cloud) -> None:
    wanted = cloud.create_spot_instance(make_request("a"))
    cloud.create_spot_instance(make_request("b", region="westus2", availability_zone="westus2-1"))
    cloud.create_spot_instance(make_request("c", tags={"workload-id": "not ours"}))
    pending = cloud.list_managed_instances(REGION)
    assert [(info.instance_id, info.state) for info in pending] == [(wanted.instance_id, InstanceState.PENDING)]

    run_to_completion(cloud, wanted)
    (listed,) = cloud.list_managed_instances(REGION)
    assert (listed.instance_id, listed.state, listed.region) == (wanted.instance_id, InstanceState.RUNNING, REGION)
    assert listed.tags[base.MANAGED_BY_TAG] == base.MANAGED_BY_VALUE
    assert listed.launched_at is not None
    assert [info.region for info in cloud.list_managed_instances("westus2")] == ["westus2"]


# --- configuration ----------------------------------------------------------------------------------------------------


@pytest.fixture
def azure_settings(settings, emulator):
    settings.AZURE_SUBSCRIPTION_ID = emulator.subscription_id
    settings.AZURE_RESOURCE_GROUP = emulator.resource_group
    settings.AZURE_RESOURCE_MANAGER_URL = emulator.base_url
    settings.AZURE_ACCESS_TOKEN = "settings-token"
    settings.AZURE_SUBNET_IDS = {REGION: emulator.subnet_id(REGION)}
    settings.AZURE_SSH_PUBLIC_KEY = SSH_KEY
    settings.AZURE_IMAGE = "Canonical:ubuntu-24_04-lts:server:latest"
    settings.AZURE_ADMIN_USERNAME = "ops"
    settings.CLOUD_INSTANCE_ADDRESS = "public"
    settings.CLOUD_API_TIMEOUT_SECONDS = 5
    return settings


def test_from_settings_runs_against_the_configured_endpoint(emulator, azure_settings) -> None:
    cloud = AzureCloud.from_settings("azure")
    assert base.cloud_factories()["azure"] == AzureCloud.from_settings
    created = cloud.create_spot_instance(make_request())
    assert run_to_completion(cloud, created).state is InstanceState.RUNNING
    assert emulator.last_put_body["properties"]["osProfile"]["adminUsername"] == "ops"
    assert set(emulator.authorizations) == {"Bearer settings-token"}


def test_from_settings_uses_the_default_credential_without_a_token(monkeypatch, azure_settings) -> None:
    sentinel = StaticTokenCredential("from-default-credential")
    monkeypatch.setattr(azure_adapter, "default_credential", lambda: sentinel)
    azure_settings.AZURE_ACCESS_TOKEN = ""
    cloud = AzureCloud.from_settings("azure")
    assert cloud._compute._config.credential is sentinel


def test_from_settings_refuses_what_it_cannot_run(azure_settings) -> None:
    with pytest.raises(ConfigError) as excinfo:
        AzureCloud.from_settings("aws")
    assert excinfo.value.variable == "CLOUD_BACKENDS"
    azure_settings.AZURE_RESOURCE_GROUP = ""
    with pytest.raises(ConfigError) as excinfo:
        AzureCloud.from_settings("azure")
    assert excinfo.value.variable == "AZURE_RESOURCE_GROUP"
    azure_settings.AZURE_SUBSCRIPTION_ID = ""
    with pytest.raises(ConfigError) as excinfo:
        AzureCloud.from_settings("azure")
    assert excinfo.value.variable == "AZURE_SUBSCRIPTION_ID"


def test_the_emulator_worker_env_names_what_from_settings_reads(emulator) -> None:
    env = emulator.worker_env(regions=(REGION, "westus2"))
    assert env["CLOUD_BACKENDS"] == "azure=azure"
    assert env["AZURE_RESOURCE_MANAGER_URL"] == emulator.base_url
    assert env["AZURE_SUBNET_IDS"] == f"{REGION}={emulator.subnet_id(REGION)},westus2={emulator.subnet_id('westus2')}"
    assert {"AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZURE_ACCESS_TOKEN", "AZURE_SSH_PUBLIC_KEY"} <= set(env)
