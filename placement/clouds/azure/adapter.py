"""The VM adapter, ``AzureCloud`` (backend ``azure``): Azure Resource Manager through azure-mgmt-compute.

One VM per instance, created with azure-mgmt-compute in ``AZURE_RESOURCE_GROUP``:

* The VM's name is the request's idempotency token, so a retried create is a PUT of
  the same resource (ARM's create-or-update is idempotent on the name) and finds
  the VM it already made. A spot request is ``priority: Spot``, ``evictionPolicy: Delete``,
  ``billingProfile.maxPrice`` our bid; an on-demand one ``priority: Regular`` with
  neither. Both carry the request's tags; the boot script (``base.startup_script``)
  goes in as custom data. The VM's ``priority`` tells ``InstanceInfo.market`` back.
* The network interface and its public IP are declared inline
  (``networkProfile.networkInterfaceConfigurations``, network API 2020-11-01) on the
  region's subnet (``AZURE_SUBNET_IDS``), each deleted with the VM: one PUT makes
  everything and one DELETE removes everything, disks included.
* Nothing ever waits on Azure. A create answers at once with the operation's
  continuation token; ``get_instance_status`` makes one status request per call
  (see ``polling.OneStepPolling``). Transport retries are limited to one reconnect; a
  throttled (429) or failing (5xx) answer is raised as ``TransientCloudError`` at
  once for the workflow to retry later, instead of a worker sleeping out a backoff.
* Eviction (Spot VMs only). With the Delete policy Azure deletes an evicted VM (and its disks,
  NIC and IP); the only record of why is the subscription's activity log, where the
  platform writes ``Microsoft.Compute/virtualMachines/evictSpotVM/action`` against
  the VM. When a VM is gone or being deleted, the adapter reads that log for it:
  an eviction there makes the instance ``PREEMPTED``; otherwise it is deleted
  (``TERMINATED`` while deleting, ``InstanceNotFound`` once gone).

Credentials: ``AZURE_ACCESS_TOKEN`` when set (a bearer token used as it is, for
emulators and short runs), else ``azure.identity.DefaultAzureCredential`` (a service
principal from AZURE_TENANT_ID / AZURE_CLIENT_ID / AZURE_CLIENT_SECRET, or a managed
identity). An ``http://`` ``AZURE_RESOURCE_MANAGER_URL`` (an emulator) gets the token
over plain HTTP, which azure-core refuses by default.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from azure.core.exceptions import AzureError
from azure.core.rest import HttpRequest
from azure.mgmt.core.tools import parse_resource_id
from django.conf import settings
from django.utils import timezone

from arbitrage.env import ConfigError
from placement.clouds import base, config
from placement.clouds.azure.credentials import PlainHttpAuthenticationPolicy, StaticTokenCredential, default_credential
from placement.clouds.azure.errors import PROVIDER, cloud_error, json_of, operation_error, provisioning_error
from placement.clouds.azure.polling import OneStepPolling
from placement.clouds.azure.resources import market_of, vm_body
from placement.clouds.base import (
    InstanceInfo,
    InstanceNotFound,
    InstanceRequest,
    InstanceState,
    Market,
    PermanentCloudError,
)

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

logger = logging.getLogger("placement.clouds.azure")

ACTIVITY_LOG_API_VERSION = "2015-04-01"
#: What the activity log records against a VM the platform evicted (Spot, either eviction policy).
EVICTION_OPERATION = "Microsoft.Compute/virtualMachines/evictSpotVM/action"
#: How far back the activity log is read for a VM's eviction (it keeps 90 days).
EVICTION_LOOKBACK = timedelta(days=7)
_MAX_LIST_PAGES = 5
# Azure's rule for a Linux VM name (1-64 characters); idempotency tokens "ca-<32 hex>" fit it.
_VM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}[A-Za-z0-9_]$|^[A-Za-z0-9]$")


class AzureCloud(base.CloudAdapter):
    """Azure Spot and Regular VMs through Azure Resource Manager (azure-mgmt-compute / azure-mgmt-network)."""

    provider = PROVIDER

    def __init__(
        self,
        *,
        subscription_id: str,
        resource_group: str,
        credential: TokenCredential,
        base_url: str = "https://management.azure.com",
        subnet_ids: Mapping[str, str] | None = None,
        image: str = "Canonical:ubuntu-24_04-lts:server:latest",
        admin_username: str = "arbitrage",
        ssh_public_key: str = "",
        address: str = "public",
        timeout: float = 30,
    ) -> None:
        from azure.mgmt.compute import ComputeManagementClient
        from azure.mgmt.network import NetworkManagementClient

        if address not in ("public", "private"):
            raise ValueError(f"address must be public or private, not {address!r}")
        self.subscription_id = subscription_id
        self.resource_group = resource_group
        self.base_url = base_url.rstrip("/")
        self.subnet_ids = dict(subnet_ids or {})
        self.image = image
        self.admin_username = admin_username
        self.ssh_public_key = ssh_public_key
        self.address = address
        self.timeout = timeout
        scopes = [f"{self.base_url}/.default"]
        self._compute = ComputeManagementClient(credential, subscription_id, **self._client_options(credential, scopes))
        self._network = NetworkManagementClient(credential, subscription_id, **self._client_options(credential, scopes))

    def _client_options(self, credential: TokenCredential, scopes: list[str]) -> dict[str, Any]:
        options: dict[str, Any] = {
            "base_url": self.base_url,
            "credential_scopes": scopes,
            "connection_timeout": self.timeout,
            "read_timeout": self.timeout,
            # One quick reconnect; throttling and 5xx answers go straight back to the workflow.
            "retry_total": 1,
            "retry_connect": 1,
            "retry_read": 0,
            "retry_status": 0,
            "retry_backoff_factor": 0.2,
            "retry_backoff_max": 1,
        }
        if urlsplit(self.base_url).scheme == "http":
            # A policy instance per client: a pipeline chains its policies through them.
            options["authentication_policy"] = PlainHttpAuthenticationPolicy(credential, *scopes)
        return options

    @classmethod
    def from_settings(cls, provider: str) -> AzureCloud:
        """The ``azure`` backend of ``CLOUD_BACKENDS``, configured from the ``AZURE_*`` settings."""
        if provider != PROVIDER:
            raise ConfigError("CLOUD_BACKENDS", f"the azure backend runs Azure instances only, not {provider!r}")
        for name in ("AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP"):
            if not getattr(settings, name, ""):
                raise ConfigError(name, "required by the azure cloud backend")
        token = settings.AZURE_ACCESS_TOKEN
        return cls(
            subscription_id=settings.AZURE_SUBSCRIPTION_ID,
            resource_group=settings.AZURE_RESOURCE_GROUP,
            credential=StaticTokenCredential(token) if token else default_credential(),
            base_url=settings.AZURE_RESOURCE_MANAGER_URL,
            subnet_ids=settings.AZURE_SUBNET_IDS,
            image=settings.AZURE_IMAGE,
            admin_username=settings.AZURE_ADMIN_USERNAME,
            ssh_public_key=settings.AZURE_SSH_PUBLIC_KEY,
            **config.adapter_options(),
        )

    # --- create ---------------------------------------------------------------------------------------------------

    def create_instance(self, request: InstanceRequest) -> InstanceInfo:
        name = _vm_name(request.idempotency_token)
        body = vm_body(
            name=name,
            request=request,
            subnet_id=self.subnet_ids.get(request.region, ""),
            image=self.image,
            admin_username=self.admin_username,
            ssh_public_key=self.ssh_public_key,
        )
        try:
            poller = self._compute.virtual_machines.begin_create_or_update(
                self.resource_group, name, body, polling=OneStepPolling()
            )
            token = poller.continuation_token()
        except AzureError as error:
            normalised = cloud_error(error)
            if isinstance(normalised, InstanceNotFound):
                # What a create finds missing is something it refers to (group, subnet, image): configuration.
                normalised = PermanentCloudError(normalised.message, provider=PROVIDER, code=normalised.code)
            raise normalised from error
        return InstanceInfo(
            instance_id=name,
            state=InstanceState.PENDING,
            region=request.region,
            availability_zone=request.availability_zone,
            instance_type=request.instance_type,
            tags=dict(request.tags),
            operation=token,
            market=request.market,
        )

    # --- status ---------------------------------------------------------------------------------------------------

    def get_instance_status(self, instance_id: str, region: str, *, operation: str = "") -> InstanceInfo:
        """Where the VM is: one operation-status request while its create runs, then the VM itself.

        With ``operation`` (the create's continuation token): InProgress is PENDING; a
        failed operation raises its error, normalised (capacity, quota, price too low: the
        workflow tries the next candidate); once it succeeded, the VM is read with its
        instance view (and, when running, its NIC and public IP for the address).
        """
        name = _vm_name(instance_id)
        if operation:
            status = self._follow(name, operation)
            if not _status_is(status, "Succeeded", "Unknown"):
                return InstanceInfo(
                    instance_id=name,
                    state=InstanceState.PENDING,
                    region=region,
                    state_reason=f"create operation {status}",
                    operation=operation,
                )
        vm = self._read_vm(name)
        if vm is None or _location(vm) != region.casefold():
            if vm is None and self._evicted(name):
                return InstanceInfo(
                    instance_id=name,
                    state=InstanceState.PREEMPTED,
                    region=region,
                    state_reason="Spot eviction",
                    market=Market.SPOT,  # only a Spot VM is evicted
                )
            raise InstanceNotFound(
                f"The Resource 'Microsoft.Compute/virtualMachines/{name}' under resource group "
                f"'{self.resource_group}' was not found in {region}.",
                provider=PROVIDER,
                code="ResourceNotFound",
            )
        state, reason = self._state(vm)
        address = ""
        if state is InstanceState.RUNNING:
            address = self._vm_address(vm)
            if not address:
                state, reason = InstanceState.PENDING, f"running, waiting for its {self.address} address"
        return self._info(vm, state, reason, address=address)

    def _follow(self, name: str, token: str) -> str:
        """The create operation's status after one status request; raises its error if it failed."""
        polling = OneStepPolling()
        try:
            self._compute.virtual_machines.begin_create_or_update(
                self.resource_group, name, None, continuation_token=token, polling=polling
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise PermanentCloudError(
                f"not an Azure operation token for {name}: {exc}", provider=PROVIDER, code="InvalidContinuationToken"
            ) from exc
        except AzureError as error:
            raise cloud_error(error) from error
        try:
            status = polling.check()
        except AzureError as error:
            raise cloud_error(error) from error
        if _status_is(status, "Failed", "Canceled"):
            response = polling.last_response
            raise operation_error(json_of(response) if response is not None else {"status": status})
        return status

    def _read_vm(self, name: str) -> dict[str, Any] | None:
        """The VM with its instance view, as ARM's JSON; ``None`` if there is no such VM."""
        try:
            vm = self._compute.virtual_machines.get(self.resource_group, name, expand="instanceView")
        except AzureError as error:
            normalised = cloud_error(error)
            if isinstance(normalised, InstanceNotFound):
                return None
            raise normalised from error
        return vm.as_dict()

    def _state(self, vm: Mapping[str, Any]) -> tuple[InstanceState, str]:
        properties = vm.get("properties") or {}
        provisioning = str(properties.get("provisioningState") or "")
        statuses = (properties.get("instanceView") or {}).get("statuses") or []
        power = ""
        failure: dict[str, Any] | None = None
        deleting = _status_is(provisioning, "Deleting")
        for status in statuses:
            code = str(status.get("code") or "")
            kind, _, rest = code.partition("/")
            if _status_is(kind, "PowerState"):
                power = rest.casefold()
            elif _status_is(kind, "ProvisioningState"):
                deleting = deleting or _status_is(rest, "deleting")
                if rest.casefold().startswith("failed"):
                    failure = status
        # Only a Spot VM can be evicted: a Regular one is never looked up in the activity log.
        spot = market_of(properties) is Market.SPOT
        if deleting:
            if spot and self._evicted(vm["name"]):
                return InstanceState.PREEMPTED, "Spot eviction"
            return InstanceState.TERMINATED, "being deleted"
        if power == "running":
            return InstanceState.RUNNING, ""
        if failure is not None or _status_is(provisioning, "Failed"):
            raise provisioning_error(failure)
        if power in ("stopping", "deallocating"):
            return InstanceState.STOPPING, f"PowerState/{power}"
        if power in ("stopped", "deallocated"):
            if spot and self._evicted(vm["name"]):
                return InstanceState.PREEMPTED, "Spot eviction"
            return InstanceState.TERMINATED, f"PowerState/{power}"
        return InstanceState.PENDING, f"provisioningState {provisioning or 'unknown'}"

    def _evicted(self, name: str) -> bool:
        """Whether the activity log records Azure evicting this VM (``evictSpotVM``), lately.

        Best effort: the log may lag the eviction by minutes, and reading it needs
        ``Microsoft.Insights/eventtypes/values/read``; when it cannot tell, the VM is
        taken as deleted rather than failing the status check.
        """
        resource_id = self._vm_id(name)
        since = (timezone.now() - EVICTION_LOOKBACK).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        query = {
            "api-version": ACTIVITY_LOG_API_VERSION,
            "$filter": f"eventTimestamp ge '{since}' and resourceUri eq '{resource_id}'",
            "$select": "operationName,status,eventTimestamp,resourceId",
        }
        path = f"/subscriptions/{self.subscription_id}/providers/Microsoft.Insights/eventtypes/management/values"
        url: str | None = f"{path}?{urlencode(query)}"
        try:
            for _page in range(_MAX_LIST_PAGES):
                if not url:
                    break
                response = self._compute.send_request(HttpRequest("GET", url))
                response.raise_for_status()
                document = response.json()
                for event in document.get("value") or []:
                    operation = (event.get("operationName") or {}).get("value") or ""
                    if operation.casefold() == EVICTION_OPERATION.casefold():
                        return True
                url = document.get("nextLink") or None
        except (AzureError, ValueError, AttributeError) as exc:
            logger.warning("azure: cannot read the activity log of %s: %s", name, cloud_error(exc).message)
        return False

    def _vm_address(self, vm: Mapping[str, Any]) -> str:
        """The VM's public or private IP (``address``), from its primary NIC; "" while it has none."""
        interfaces = ((vm.get("properties") or {}).get("networkProfile") or {}).get("networkInterfaces") or []
        nic_ref = _primary(interfaces)
        if not nic_ref or not nic_ref.get("id"):
            return ""
        try:
            nic = self._network.network_interfaces.get(**_name_in_group(nic_ref["id"])).as_dict()
            ip_config = _primary((nic.get("properties") or {}).get("ipConfigurations") or [])
            if not ip_config:
                return ""
            ip_properties = ip_config.get("properties") or {}
            if self.address == "private":
                return str(ip_properties.get("privateIPAddress") or "")
            public_ref = ip_properties.get("publicIPAddress") or {}
            if not public_ref.get("id"):
                return ""
            public_ip = self._network.public_ip_addresses.get(
                **_name_in_group(public_ref["id"], "public_ip_address_name")
            )
            return str((public_ip.as_dict().get("properties") or {}).get("ipAddress") or "")
        except AzureError as error:
            normalised = cloud_error(error)
            if isinstance(normalised, InstanceNotFound):
                return ""
            raise normalised from error

    # --- terminate, list ------------------------------------------------------------------------------------------

    def console_output(self, instance_id: str, region: str, *, offset: int = 0, limit: int = 1 << 20) -> bytes:
        """Not read from Azure yet: returns nothing.

        Boot diagnostics keep the serial log as a blob behind a short-lived SAS URL, and need
        boot diagnostics enabled on the VM, which we do not ask for yet.
        """
        return b""

    def terminate_instance(self, instance_id: str, region: str) -> None:
        """Start deleting the VM (its disk, NIC and public IP go with it); do not wait for it."""
        try:
            self._compute.virtual_machines.begin_delete(self.resource_group, _vm_name(instance_id), polling=False)
        except AzureError as error:
            normalised = cloud_error(error)
            if isinstance(normalised, InstanceNotFound):
                logger.info("azure: terminate of unknown VM %s", instance_id)
                return
            raise normalised from error

    def list_managed_instances(self, region: str) -> list[InstanceInfo]:
        """VMs of the resource group in ``region`` tagged ``managed-by: compute-arbitrage``.

        States come from the list's provisioning states (the list has no instance views):
        Creating/Updating is PENDING, Succeeded RUNNING, Failed FAILED; VMs being deleted
        are left out.
        """
        infos = []
        try:
            for item in self._compute.virtual_machines.list(self.resource_group):
                vm = item.as_dict()
                if (vm.get("tags") or {}).get(base.MANAGED_BY_TAG) != base.MANAGED_BY_VALUE:
                    continue
                if _location(vm) != region.casefold():
                    continue
                provisioning = str((vm.get("properties") or {}).get("provisioningState") or "")
                if _status_is(provisioning, "Deleting"):
                    continue
                if _status_is(provisioning, "Succeeded"):
                    state = InstanceState.RUNNING
                elif _status_is(provisioning, "Failed"):
                    state = InstanceState.FAILED
                else:
                    state = InstanceState.PENDING
                infos.append(self._info(vm, state, f"provisioningState {provisioning}"))
        except AzureError as error:
            raise cloud_error(error) from error
        return infos

    # --- helpers --------------------------------------------------------------------------------------------------

    def _vm_id(self, name: str) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Compute/virtualMachines/{name}"
        )

    def _info(self, vm: Mapping[str, Any], state: InstanceState, reason: str, *, address: str = "") -> InstanceInfo:
        properties = vm.get("properties") or {}
        region = str(vm.get("location") or "")
        zones = vm.get("zones") or []
        return InstanceInfo(
            instance_id=str(vm.get("name") or ""),
            state=state,
            region=region,
            availability_zone=f"{region}-{zones[0]}" if zones else "",
            instance_type=str((properties.get("hardwareProfile") or {}).get("vmSize") or ""),
            public_ip=address,
            tags=dict(vm.get("tags") or {}),
            launched_at=_parse_time(properties.get("timeCreated")),
            state_reason=reason,
            market=market_of(properties),
        )


def _vm_name(token: str) -> str:
    if not _VM_NAME.match(token):
        raise PermanentCloudError(f"{token!r} is not a valid Azure VM name", provider=PROVIDER, code="InvalidParameter")
    return token


def _location(vm: Mapping[str, Any]) -> str:
    return str(vm.get("location") or "").replace(" ", "").casefold()


def _primary(items: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The item marked primary (``properties.primary``), else the only or first one."""
    for item in items:
        if (item.get("properties") or {}).get("primary"):
            return item
    return items[0] if items else None


def _name_in_group(resource_id: str, name_keyword: str = "network_interface_name") -> dict[str, str]:
    parts = parse_resource_id(resource_id)
    return {"resource_group_name": parts["resource_group"], name_keyword: parts["name"]}


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _status_is(status: str, *names: str) -> bool:
    return str(getattr(status, "value", status)).casefold() in {name.casefold() for name in names}


base.register_cloud_factory("azure", AzureCloud.from_settings)
