"""A local Azure Resource Manager, answering the calls the Azure Spot VM adapter makes, as ARM does.

``AzureEmulator()`` (a context manager, or ``start()`` / ``stop()``: an ``EmulatorServer``) serves
on 127.0.0.1 at ``.base_url``, accepting any bearer token:

* ``PUT/GET/DELETE /subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}``
  (``?$expand=instanceView`` on GET), ``GET .../virtualMachines/{name}/instanceView`` and
  ``GET .../virtualMachines`` (the list, one page).
* A new VM's PUT answers 201, ``provisioningState: Creating``, with an ``Azure-AsyncOperation``
  header pointing at ``GET /subscriptions/{s}/providers/Microsoft.Compute/locations/{loc}/operations/{id}``,
  which answers ``{"status": "InProgress"}`` ``operation_polls`` times (default 1), then
  ``Succeeded`` (the VM runs) or ``Failed`` with ``{"error": {"code", "message"}}`` (the VM
  stays, ``Failed``, instance view ``ProvisioningState/failed/<code>``). Reading the VM
  counts as a poll too, so a client that does not follow the operation still sees it advance.
  A PUT of an existing VM answers 200 and the VM's creation operation (create-or-update
  is idempotent on the name); one that changes its ``priority`` is refused, as ARM refuses it.
* ``properties.priority`` is stored as sent (``Spot``, ``Regular``, or left out: Regular). As
  ARM does, a VM that is not Spot (or the older Low) cannot have an ``evictionPolicy`` or a
  ``billingProfile.maxPrice`` (400 ``EvictionPolicyCanBeSetOnlyOnAzureSpotVirtualMachines``,
  ``MaxPriceIsSupportedOnlyForAzureSpotVirtualMachines``).
* ``DELETE`` answers 202 with an ``Azure-AsyncOperation`` (already Succeeded) and the VM
  is gone, with the NIC and public IP its inline network configuration made
  (``deleteOption: Delete``); an unknown VM answers 204.
* ``GET .../providers/Microsoft.Network/networkInterfaces/{name}`` and ``.../publicIPAddresses/{name}``:
  made when a VM's creation succeeds, reporting ``private_ip`` / ``public_ip`` (both
  127.0.0.1 by default, so a control plane's health check reaches a local server).
* ``GET /subscriptions/{s}/providers/Microsoft.Insights/eventtypes/management/values?$filter=...``:
  the activity log, where ``evict()`` writes ``Microsoft.Compute/virtualMachines/evictSpotVM/action``
  as Azure does, and a DELETE writes ``.../virtualMachines/delete``.

Errors are ARM's ``{"error": {"code", "message"}}``. Test controls: ``fail_put()``
(the next PUTs answer an error), ``fail_requests()`` (the next requests of any kind),
``fail_operation()`` (the next created VM's operation ends Failed), ``evict()``, ``deallocate()``,
``expire_operations()``; ``vms`` (the VMs' ARM JSON by name), ``last_put_body``,
``requests`` (method and path of each), ``authorizations`` (the Authorization headers seen).
``worker_env()`` is the environment a process needs to run the ``azure`` backend against it.
"""

from __future__ import annotations

import base64
import binascii
import copy
import itertools
import json
import re
import threading
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.placement.emulator_server import EmulatorServer

SUBSCRIPTION_ID = "00000000-0000-4000-8000-000000000000"
RESOURCE_GROUP = "rg-arbitrage"
EVICTION_OPERATION = "Microsoft.Compute/virtualMachines/evictSpotVM/action"
DELETE_OPERATION = "Microsoft.Compute/virtualMachines/delete"

_VMS = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.Compute/virtualMachines"
    r"(?:/(?P<name>[^/]+)(?P<view>/instanceView)?)?$",
    re.IGNORECASE,
)
_OPERATION = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/providers/Microsoft\.Compute/locations/(?P<loc>[^/]+)/operations/(?P<id>[^/]+)$",
    re.IGNORECASE,
)
_NETWORK = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.Network/"
    r"(?P<kind>networkInterfaces|publicIPAddresses)/(?P<name>[^/]+)$",
    re.IGNORECASE,
)
_ACTIVITY_LOG = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/providers/Microsoft\.Insights/eventtypes/management/values$", re.IGNORECASE
)
_FILTER_SINCE = re.compile(r"eventTimestamp ge '([^']+)'", re.IGNORECASE)
_FILTER_RESOURCE = re.compile(r"resourceUri eq '([^']+)'", re.IGNORECASE)

Answer = tuple[int, dict[str, str], Any]


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _error(status: int, code: str, message: str) -> Answer:
    return status, {}, {"error": {"code": code, "message": message}}


def _priority(properties: dict[str, Any]) -> str:
    """A VM's priority, casefolded: one sent without any is Regular."""
    return str(properties.get("priority") or "Regular").casefold()


class AzureEmulator(EmulatorServer):
    methods = ("GET", "PUT", "DELETE")

    def __init__(
        self,
        *,
        operation_polls: int = 1,
        public_ip: str = "127.0.0.1",
        private_ip: str = "127.0.0.1",
        subscription_id: str = SUBSCRIPTION_ID,
        resource_group: str = RESOURCE_GROUP,
    ) -> None:
        super().__init__()
        self.operation_polls = operation_polls
        self.public_ip = public_ip
        self.private_ip = private_ip
        self.subscription_id = subscription_id
        self.resource_group = resource_group
        self.requests: list[tuple[str, str]] = []
        self.authorizations: list[str] = []
        self.last_put_body: dict[str, Any] | None = None
        self.activity_log: list[dict[str, Any]] = []
        self._lock = threading.RLock()
        self._vms: dict[tuple[str, str], dict[str, Any]] = {}  # (rg, name) casefolded -> record
        self._network: dict[tuple[str, str, str], dict[str, Any]] = {}  # (kind, rg, name) casefolded -> resource
        self._operations: dict[str, dict[str, Any]] = {}
        self._put_failures: list[Answer] = []
        self._request_failures: list[Answer] = []
        self._operation_failures: list[dict[str, str]] = []
        self._ids = itertools.count(1)

    @property
    def base_url(self) -> str:
        return self.origin

    # --- helpers for tests and workers ---------------------------------------------------------------------------

    def subnet_id(self, region: str) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}/providers/"
            f"Microsoft.Network/virtualNetworks/vnet-{region}/subnets/default"
        )

    def worker_env(self, *, regions: tuple[str, ...] = ("eastus",), token: str = "emulator-token") -> dict[str, str]:
        """Environment variables that make a process (a Celery worker) run the ``azure`` backend against this."""
        return {
            "CLOUD_BACKENDS": "azure=azure",
            "AZURE_SUBSCRIPTION_ID": self.subscription_id,
            "AZURE_RESOURCE_GROUP": self.resource_group,
            "AZURE_RESOURCE_MANAGER_URL": self.base_url,
            "AZURE_ACCESS_TOKEN": token,
            "AZURE_SUBNET_IDS": ",".join(f"{region}={self.subnet_id(region)}" for region in regions),
            "AZURE_SSH_PUBLIC_KEY": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEmulatorKeyForTestsOnly emulator",
        }

    # --- test controls ------------------------------------------------------------------------------------------

    def fail_put(self, status: int, code: str, message: str, *, times: int = 1) -> None:
        """The next ``times`` VM PUTs answer this ARM error."""
        with self._lock:
            self._put_failures.extend([_error(status, code, message)] * times)

    def fail_requests(self, status: int, code: str, message: str, *, times: int = 1) -> None:
        """The next ``times`` requests, whatever they are, answer this ARM error."""
        with self._lock:
            self._request_failures.extend([_error(status, code, message)] * times)

    def fail_operation(self, code: str, message: str) -> None:
        """The next created VM's async operation ends ``Failed`` with this error (e.g. AllocationFailed)."""
        with self._lock:
            self._operation_failures.append({"code": code, "message": message})

    def expire_operations(self) -> None:
        """Forget every async operation (ARM keeps them for a limited time): their URLs answer 404."""
        with self._lock:
            self._operations.clear()

    def evict(self, name: str, *, deleted: bool = True) -> None:
        """Evict a Spot VM as Azure does with the Delete policy: log ``evictSpotVM``, then delete the VM.

        ``deleted=False`` leaves it mid-way: ``provisioningState: Deleting``, deallocated.
        """
        with self._lock:
            key = self._find(name)
            record = self._vms[key]
            self._log(record["resource"]["id"], EVICTION_OPERATION, caller="Microsoft.Compute")
            if deleted:
                self._delete(key)
            else:
                record["resource"]["properties"]["provisioningState"] = "Deleting"
                record["power"] = "deallocated"

    def deallocate(self, name: str) -> None:
        """Stop and deallocate a VM as its owner would (``az vm deallocate``): no eviction is logged."""
        with self._lock:
            self._vms[self._find(name)]["power"] = "deallocated"

    @property
    def vms(self) -> dict[str, dict[str, Any]]:
        """The VMs, by name, as ARM's JSON (with their instance views)."""
        with self._lock:
            return {record["resource"]["name"]: self._vm_json(record, expand=True) for record in self._vms.values()}

    # --- the ARM API --------------------------------------------------------------------------------------------

    def respond(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """``answer``'s ARM answer over HTTP: its JSON body, with the request id ARM sends with every answer."""
        status, answer_headers, document = self.answer(method, target, headers, body)
        payload = b"" if document is None else json.dumps(document).encode()
        content_type = {"Content-Type": "application/json; charset=utf-8"} if payload else {}
        return status, {**answer_headers, **content_type, "x-ms-request-id": str(uuid.uuid4())}, payload

    def answer(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> Answer:
        url = urlsplit(target)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        with self._lock:
            self.requests.append((method, url.path))
            authorization = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
            self.authorizations.append(authorization)
            if not authorization.startswith("Bearer ") or not authorization[7:].strip():
                return _error(
                    401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing."
                )
            if "api-version" not in query:
                return _error(
                    400, "MissingApiVersionParameter", "The api-version query parameter (?api-version=) is required."
                )
            if self._request_failures:
                return self._request_failures.pop(0)
            return self._route(method, url.path, query, raw)

    def _route(self, method: str, path: str, query: dict[str, str], raw: bytes) -> Answer:
        if match := _VMS.match(path):
            rg, name, view = match["rg"], match["name"], match["view"]
            if name is None:
                if method == "GET":
                    return self._list(rg)
            elif view:
                if method == "GET":
                    return self._get(rg, name, instance_view_only=True)
            elif method == "PUT":
                return self._put(match["sub"], rg, name, raw)
            elif method == "GET":
                return self._get(rg, name, expand=query.get("$expand", "").casefold() == "instanceview")
            elif method == "DELETE":
                return self._delete_request(match["sub"], rg, name)
            return _error(405, "MethodNotAllowed", f"The requested method {method} is not allowed.")
        if (match := _OPERATION.match(path)) and method == "GET":
            return self._operation(match["id"])
        if (match := _NETWORK.match(path)) and method == "GET":
            resource = self._network.get((match["kind"].casefold(), match["rg"].casefold(), match["name"].casefold()))
            if resource is None:
                kind = f"Microsoft.Network/{match['kind']}/{match['name']}"
                return _error(404, "ResourceNotFound", self._not_found(kind, match["rg"]))
            return 200, {}, copy.deepcopy(resource)
        if (match := _ACTIVITY_LOG.match(path)) and method == "GET":
            return self._activity(query)
        return _error(404, "InvalidResourceType", f"The resource type could not be found for {path}.")

    # --- virtual machines ---------------------------------------------------------------------------------------

    def _find(self, name: str, rg: str | None = None) -> tuple[str, str]:
        if rg is not None:
            return (rg.casefold(), name.casefold())
        for key in self._vms:
            if key[1] == name.casefold():
                return key
        raise KeyError(name)

    @staticmethod
    def _not_found(kind: str, rg: str) -> str:
        return (
            f"The Resource '{kind}' under resource group '{rg}' was not found. "
            "For more details please go to https://aka.ms/ARMResourceNotFoundFix"
        )

    def _put(self, sub: str, rg: str, name: str, raw: bytes) -> Answer:
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return _error(
                400, "InvalidRequestContent", "The request content was invalid and could not be deserialized."
            )
        self.last_put_body = copy.deepcopy(body)
        if self._put_failures:
            return self._put_failures.pop(0)
        problem = self._invalid(body)
        if problem:
            return _error(400, "InvalidParameter", problem)
        if spot_only := self._spot_only_settings(body):
            return _error(400, *spot_only)
        key = (rg.casefold(), name.casefold())
        existing = self._vms.get(key)
        if existing is not None:
            if _priority(existing["resource"]["properties"]) != _priority(body["properties"]):
                return _error(409, "PropertyChangeNotAllowed", "Changing property 'priority' is not allowed.")
            operation = self._operations.get(existing["operation"])
            headers = self._operation_headers(sub, existing["resource"]["location"], existing["operation"])
            if operation is None:
                headers = self._operation_headers(sub, existing["resource"]["location"], self._new_operation(key))
            return 200, headers, self._vm_json(existing)
        resource_id = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}"
        properties = copy.deepcopy(body["properties"])
        properties["osProfile"].pop("customData", None)  # ARM never returns custom data
        properties.update(provisioningState="Creating", vmId=str(uuid.uuid4()), timeCreated=_now())
        resource = {
            "id": resource_id,
            "name": name,
            "type": "Microsoft.Compute/virtualMachines",
            "location": body["location"],
            "tags": dict(body.get("tags") or {}),
            "properties": properties,
        }
        if body.get("zones"):
            resource["zones"] = list(body["zones"])
        record = {"resource": resource, "power": "starting", "failure": None, "sub": sub, "rg": rg}
        self._vms[key] = record
        failure = self._operation_failures.pop(0) if self._operation_failures else None
        record["operation"] = self._new_operation(key, failure=failure)
        return 201, self._operation_headers(sub, body["location"], record["operation"]), self._vm_json(record)

    @staticmethod
    def _invalid(body: dict[str, Any]) -> str:
        """What a VM body lacks that ARM requires, or ""."""
        properties = body.get("properties") or {}
        if not body.get("location"):
            return "The value of parameter location is invalid."
        if not (properties.get("hardwareProfile") or {}).get("vmSize"):
            return "The value of parameter hardwareProfile.vmSize is invalid."
        if not (properties.get("storageProfile") or {}).get("imageReference"):
            return "Required parameter 'imageReference' is missing (null)."
        os_profile = properties.get("osProfile") or {}
        if not os_profile.get("adminUsername") or not os_profile.get("computerName"):
            return "Required parameter 'osProfile' is missing (null)."
        try:
            base64.b64decode(os_profile.get("customData") or "", validate=True)
        except (binascii.Error, ValueError):
            return "Custom data in OSProfile must be in Base64 encoding."
        nics = (properties.get("networkProfile") or {}).get("networkInterfaceConfigurations") or []
        if not nics:
            return "Required parameter 'networkProfile' is missing (null)."
        for nic in nics:
            for ip_config in (nic.get("properties") or {}).get("ipConfigurations") or []:
                if not ((ip_config.get("properties") or {}).get("subnet") or {}).get("id"):
                    return "Subnet is required in ipConfigurations."
        return ""

    @staticmethod
    def _spot_only_settings(body: dict[str, Any]) -> tuple[str, str] | None:
        """ARM's (code, message) for Spot-only settings on a VM that is not Spot, or None."""
        properties = body.get("properties") or {}
        if _priority(properties) in ("spot", "low"):
            return None
        if properties.get("evictionPolicy"):
            return (
                "EvictionPolicyCanBeSetOnlyOnAzureSpotVirtualMachines",
                "Eviction policy can be set only on Azure Spot Virtual Machines.",
            )
        if (properties.get("billingProfile") or {}).get("maxPrice") is not None:
            return (
                "MaxPriceIsSupportedOnlyForAzureSpotVirtualMachines",
                "Max price is supported only for Azure Spot Virtual Machines.",
            )
        return None

    def _get(self, rg: str, name: str, *, expand: bool = False, instance_view_only: bool = False) -> Answer:
        record = self._vms.get((rg.casefold(), name.casefold()))
        if record is None:
            return _error(404, "ResourceNotFound", self._not_found(f"Microsoft.Compute/virtualMachines/{name}", rg))
        operation = self._operations.get(record.get("operation", ""))
        if operation is not None and operation["status"] == "InProgress":
            self._tick(operation)
        if instance_view_only:
            return 200, {}, self._instance_view(record)
        return 200, {}, self._vm_json(record, expand=expand)

    def _list(self, rg: str) -> Answer:
        value = [self._vm_json(record) for key, record in self._vms.items() if key[0] == rg.casefold()]
        return 200, {}, {"value": value}

    def _delete_request(self, sub: str, rg: str, name: str) -> Answer:
        key = (rg.casefold(), name.casefold())
        record = self._vms.get(key)
        if record is None:
            return 204, {}, None
        location = record["resource"]["location"]
        self._log(record["resource"]["id"], DELETE_OPERATION, caller="arbitrage@example.com")
        self._delete(key)
        operation_id = self._new_operation(None, status="Succeeded")
        headers = self._operation_headers(sub, location, operation_id)
        headers["Location"] = headers["Azure-AsyncOperation"].replace("/operations/", "/operationResults/")
        return 202, headers, None

    def _delete(self, key: tuple[str, str]) -> None:
        record = self._vms.pop(key)
        name = record["resource"]["name"]
        for kind, suffix in (("networkinterfaces", "nic"), ("publicipaddresses", "pip")):
            self._network.pop((kind, key[0], f"{name}-{suffix}".casefold()), None)

    def _vm_json(self, record: dict[str, Any], *, expand: bool = False) -> dict[str, Any]:
        resource = copy.deepcopy(record["resource"])
        if expand:
            resource["properties"]["instanceView"] = self._instance_view(record)
        return resource

    def _instance_view(self, record: dict[str, Any]) -> dict[str, Any]:
        provisioning = record["resource"]["properties"]["provisioningState"]
        if record["failure"]:
            failure = record["failure"]
            statuses = [
                {
                    "code": f"ProvisioningState/failed/{failure['code']}",
                    "level": "Error",
                    "displayStatus": "Provisioning failed",
                    "message": failure["message"],
                    "time": _now(),
                }
            ]
        else:
            statuses = [
                {
                    "code": f"ProvisioningState/{provisioning.casefold()}",
                    "level": "Info",
                    "displayStatus": f"Provisioning {provisioning.casefold()}",
                    "time": _now(),
                }
            ]
        if record["power"]:
            power = record["power"]
            statuses.append({"code": f"PowerState/{power}", "level": "Info", "displayStatus": f"VM {power}"})
        return {"computerName": record["resource"]["name"], "osName": "ubuntu", "statuses": statuses}

    # --- async operations ---------------------------------------------------------------------------------------

    def _new_operation(
        self, key: tuple[str, str] | None, *, failure: dict[str, str] | None = None, status: str = "InProgress"
    ) -> str:
        operation_id = str(uuid.UUID(int=next(self._ids)))
        self._operations[operation_id] = {
            "id": operation_id,
            "vm": key,
            "status": status,
            "polls_left": self.operation_polls,
            "failure": failure,
            "startTime": _now(),
        }
        return operation_id

    def _operation_headers(self, sub: str, location: str, operation_id: str) -> dict[str, str]:
        url = (
            f"{self.base_url}/subscriptions/{sub}/providers/Microsoft.Compute/locations/{location}/operations/"
            f"{operation_id}?p={uuid.uuid4()}&api-version=2024-07-01"
        )
        return {"Azure-AsyncOperation": url}

    def _operation(self, operation_id: str) -> Answer:
        operation = self._operations.get(operation_id)
        if operation is None:
            return _error(404, "NotFound", f"The operation '{operation_id}' could not be found.")
        if operation["status"] == "InProgress":
            self._tick(operation)
        body: dict[str, Any] = {
            "startTime": operation["startTime"],
            "status": operation["status"],
            "name": operation_id,
        }
        if operation["status"] != "InProgress":
            body["endTime"] = operation.get("endTime") or operation["startTime"]
        if operation["status"] == "Failed":
            body["error"] = dict(operation["failure"])
        return 200, {}, body

    def _tick(self, operation: dict[str, Any]) -> None:
        """One status read of an operation in progress: it advances after ``operation_polls`` of them."""
        if operation["polls_left"] > 0:
            operation["polls_left"] -= 1
            return
        operation["endTime"] = _now()
        record = self._vms.get(operation["vm"]) if operation["vm"] else None
        if operation["failure"]:
            operation["status"] = "Failed"
            if record is not None:
                record["resource"]["properties"]["provisioningState"] = "Failed"
                record.update(failure=operation["failure"], power="")
            return
        operation["status"] = "Succeeded"
        if record is not None:
            record["resource"]["properties"]["provisioningState"] = "Succeeded"
            record["power"] = "running"
            self._make_network(record)

    def _make_network(self, record: dict[str, Any]) -> None:
        """The NIC and public IP a VM's inline network configuration declares, as Azure makes them."""
        vm = record["resource"]
        name, rg, sub = vm["name"], record["rg"], record["sub"]
        prefix = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network"
        nic_id, pip_id = f"{prefix}/networkInterfaces/{name}-nic", f"{prefix}/publicIPAddresses/{name}-pip"
        config = vm["properties"]["networkProfile"]["networkInterfaceConfigurations"][0]
        ip_config = config["properties"]["ipConfigurations"][0]
        ip_properties: dict[str, Any] = {
            "privateIPAddress": self.private_ip,
            "privateIPAllocationMethod": "Dynamic",
            "subnet": {"id": ip_config["properties"]["subnet"]["id"]},
            "primary": True,
            "provisioningState": "Succeeded",
        }
        if ip_config["properties"].get("publicIPAddressConfiguration"):
            ip_properties["publicIPAddress"] = {"id": pip_id}
            self._network[("publicipaddresses", rg.casefold(), f"{name}-pip".casefold())] = {
                "id": pip_id,
                "name": f"{name}-pip",
                "type": "Microsoft.Network/publicIPAddresses",
                "location": vm["location"],
                "sku": {"name": "Standard", "tier": "Regional"},
                "properties": {
                    "ipAddress": self.public_ip,
                    "publicIPAllocationMethod": "Static",
                    "publicIPAddressVersion": "IPv4",
                    "provisioningState": "Succeeded",
                },
            }
        self._network[("networkinterfaces", rg.casefold(), f"{name}-nic".casefold())] = {
            "id": nic_id,
            "name": f"{name}-nic",
            "type": "Microsoft.Network/networkInterfaces",
            "location": vm["location"],
            "properties": {
                "provisioningState": "Succeeded",
                "primary": True,
                "virtualMachine": {"id": vm["id"]},
                "ipConfigurations": [
                    {"id": f"{nic_id}/ipConfigurations/{ip_config['name']}", "name": ip_config["name"]}
                    | {"properties": ip_properties}
                ],
            },
        }
        vm["properties"]["networkProfile"]["networkInterfaces"] = [
            {"id": nic_id, "properties": {"primary": True, "deleteOption": "Delete"}}
        ]

    # --- activity log -------------------------------------------------------------------------------------------

    def _log(self, resource_id: str, operation: str, *, caller: str) -> None:
        self.activity_log.append(
            {
                "caller": caller,
                "category": {"value": "Administrative", "localizedValue": "Administrative"},
                "eventTimestamp": _now(),
                "level": "Informational",
                "operationName": {"value": operation, "localizedValue": operation},
                "resourceGroupName": resource_id.split("/")[4],
                "resourceId": resource_id,
                "resourceProviderName": {"value": "Microsoft.Compute", "localizedValue": "Microsoft.Compute"},
                "status": {"value": "Succeeded", "localizedValue": "Succeeded"},
            }
        )

    def _activity(self, query: dict[str, str]) -> Answer:
        text = query.get("$filter", "")
        since = _FILTER_SINCE.search(text)
        if since is None:
            return _error(400, "BadRequest", "The $filter query parameter must have an eventTimestamp ge clause.")
        resource = _FILTER_RESOURCE.search(text)
        start = datetime.fromisoformat(since.group(1).replace("Z", "+00:00"))
        events = [
            event
            for event in self.activity_log
            if datetime.fromisoformat(event["eventTimestamp"].replace("Z", "+00:00")) >= start
            and (resource is None or event["resourceId"].casefold() == resource.group(1).casefold())
        ]
        return 200, {}, {"value": copy.deepcopy(events)}
