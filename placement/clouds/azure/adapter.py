"""Azure: spot prices from the public Retail Prices API, and Spot VMs through Azure Resource Manager.

Prices (``AzurePriceSource``, no credentials needed)
----------------------------------------------------

``GET https://prices.azure.com/api/retail/prices?$filter=serviceName eq 'Virtual Machines'
and priceType eq 'Consumption' and armRegionName eq '<region>'`` answers pages of
``{"Items": [...], "NextPageLink": "...&$skip=100", "Count": 100}``. Each VM size has
a pay-as-you-go meter (``skuName`` "D4s v5") and a Spot meter ("D4s v5 Spot"), for
Linux and (``productName`` "... Windows") Windows; ``armSkuName`` is the size.

Azure prices spot per region, so each price comes back for every zone of the region
(``availability_zone`` ""); the catalog applies it to each zone it holds there.

Spot VMs (``AzureCloud``, backend ``azure``)
--------------------------------------------

One VM per instance, created with azure-mgmt-compute in ``AZURE_RESOURCE_GROUP``:

* The VM's name is the request's idempotency token, so a retried create is a PUT of
  the same resource (ARM's create-or-update is idempotent on the name) and finds
  the VM it already made. ``priority: Spot``, ``evictionPolicy: Delete``,
  ``billingProfile.maxPrice`` our bid, the request's tags; the boot script
  (``base.startup_script``) goes in as custom data.
* The network interface and its public IP are declared inline
  (``networkProfile.networkInterfaceConfigurations``, network API 2020-11-01) on the
  region's subnet (``AZURE_SUBNET_IDS``), each deleted with the VM: one PUT makes
  everything and one DELETE removes everything, disks included.
* Nothing ever waits on Azure. A create answers at once with the operation's
  continuation token; ``get_instance_status`` makes one status request per call
  (see ``_OneStepPolling``). Transport retries are limited to one reconnect; a
  throttled (429) or failing (5xx) answer is raised as ``TransientCloudError`` at
  once for the workflow to retry later, instead of a worker sleeping out a backoff.
* Eviction. With the Delete policy Azure deletes an evicted VM (and its disks,
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

import base64
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from azure.core.credentials import AccessToken
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.polling.base_polling import BadResponse, BadStatus, OperationFailed
from azure.core.rest import HttpRequest
from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy
from azure.mgmt.core.polling.arm_polling import ARMPolling
from azure.mgmt.core.tools import parse_resource_id
from django.conf import settings
from django.utils import timezone

from arbitrage.env import ConfigError
from placement.clouds import base
from placement.clouds.base import (
    CapacityError,
    CloudError,
    InstanceInfo,
    InstanceNotFound,
    InstanceRequest,
    InstanceState,
    ObservedPrice,
    PermanentCloudError,
    PriceSource,
    PriceTooLowError,
    QuotaError,
    TransientCloudError,
)
from placement.clouds.http import get_json

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.core.pipeline import PipelineRequest

logger = logging.getLogger(__name__)

MAX_PAGES_PER_REGION = 500


class AzurePriceSource(PriceSource):
    provider = "azure"

    def __init__(self, *, base_url: str | None = None, timeout: float | None = None) -> None:
        self.base_url = base_url or settings.AZURE_RETAIL_PRICES_URL
        self.timeout = timeout or settings.PRICE_REFRESH_TIMEOUT_SECONDS

    def fetch_spot_prices(self, *, regions: list[str]) -> list[ObservedPrice]:
        observed_at = timezone.now()
        prices: list[ObservedPrice] = []
        for region in regions:
            spot, on_demand = self._region_meters(region)
            prices.extend(
                ObservedPrice(
                    provider=self.provider,
                    region=region,
                    availability_zone="",
                    instance_type=size,
                    spot_price=price,
                    on_demand_price=on_demand.get(size),
                    observed_at=observed_at,
                )
                for size, price in sorted(spot.items())
            )
        return prices

    def _region_meters(self, region: str) -> tuple[dict[str, Decimal], dict[str, Decimal]]:
        """Linux per-hour prices of every VM size in ``region``: (spot, pay-as-you-go)."""
        query = f"serviceName eq 'Virtual Machines' and priceType eq 'Consumption' and armRegionName eq '{region}'"
        url: str | None = f"{self.base_url}?{urlencode({'$filter': query})}"
        spot: dict[str, Decimal] = {}
        on_demand: dict[str, Decimal] = {}
        for _page in range(MAX_PAGES_PER_REGION):
            if not url:
                return spot, on_demand
            document = get_json(url, provider=self.provider, timeout=self.timeout)
            try:
                items = document["Items"]
                for item in items:
                    self._collect(item, region, spot, on_demand)
            except (KeyError, TypeError, InvalidOperation) as exc:
                raise PermanentCloudError(
                    f"unexpected Retail Prices answer for {region}: {type(exc).__name__} {exc}", provider=self.provider
                ) from None
            url = document.get("NextPageLink") or None
        raise PermanentCloudError(
            f"more than {MAX_PAGES_PER_REGION} pages of prices for {region}", provider=self.provider
        )

    @staticmethod
    def _collect(item: dict[str, Any], region: str, spot: dict[str, Decimal], on_demand: dict[str, Decimal]) -> None:
        if item.get("armRegionName") != region or item.get("unitOfMeasure") != "1 Hour":
            return
        if "Windows" in item.get("productName", "") or "Low Priority" in item.get("skuName", ""):
            return
        size = item["armSkuName"]
        price = Decimal(str(item["retailPrice"]))
        if price <= 0:
            return
        target = spot if item["skuName"].endswith(" Spot") else on_demand
        # Several meters can price one size (older and newer meters): keep the lowest.
        target[size] = min(price, target.get(size, price))


# --- Spot VMs -------------------------------------------------------------------------------------------------

PROVIDER = "azure"
#: ``networkProfile.networkApiVersion`` that lets a VM declare its NICs inline.
NETWORK_API_VERSION = "2020-11-01"
ACTIVITY_LOG_API_VERSION = "2015-04-01"
#: What the activity log records against a VM the platform evicted (Spot, either eviction policy).
EVICTION_OPERATION = "Microsoft.Compute/virtualMachines/evictSpotVM/action"
#: How far back the activity log is read for a VM's eviction (it keeps 90 days).
EVICTION_LOOKBACK = timedelta(days=7)
_MAX_LIST_PAGES = 5
_TOKEN_LIFETIME_SECONDS = 10 * 365 * 86400
# Azure's rule for a Linux VM name (1-64 characters); idempotency tokens "ca-<32 hex>" fit it.
_VM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}[A-Za-z0-9_]$|^[A-Za-z0-9]$")
_NIC_CONFIG, _IP_CONFIG, _PUBLIC_IP_CONFIG = "nic", "ipconfig", "pip"

# --- error codes (ARM's ``error.code``, also an async operation's and an instance view status's) ---------------
CAPACITY_CODES = frozenset(
    {
        "SkuNotAvailable",
        "AllocationFailed",
        "ZonalAllocationFailed",
        "OverconstrainedAllocationRequest",
        "OverconstrainedZonalAllocationRequest",
    }
)
QUOTA_CODES = frozenset({"QuotaExceeded"})
#: "Unable to perform operation ... since the provided max price '<p> USD' is lower than the current spot price".
PRICE_TOO_LOW_CODES = frozenset({"SpotPriceGreaterThanProvidedMaxPrice"})
NOT_FOUND_CODES = frozenset({"ResourceNotFound", "NotFound"})
TRANSIENT_CODES = frozenset(
    {"TooManyRequests", "RetryableError", "InternalServerError", "ServiceUnavailable", "GatewayTimeout"}
)
PERMANENT_CODES = frozenset(
    {
        "InvalidParameter",
        "ImageNotFound",
        "PlatformImageNotFound",
        "InvalidTemplate",
        "AuthorizationFailed",
        "LinkedAuthorizationFailed",
        "AuthenticationFailed",
        "InvalidAuthenticationToken",
        "InvalidAuthenticationTokenTenant",
        "ExpiredAuthenticationToken",
        "ResourceGroupNotFound",
        "SubscriptionNotFound",
        "InvalidSubscriptionId",
        "InvalidResourceType",
        "MaxPriceValueInvalid",
        "AzureSpotFeatureNotEnabledForSubscription",
    }
)
_CLASSES: tuple[tuple[frozenset[str], type[CloudError]], ...] = (
    (CAPACITY_CODES, CapacityError),
    (QUOTA_CODES, QuotaError),
    (PRICE_TOO_LOW_CODES, PriceTooLowError),
    (NOT_FOUND_CODES, InstanceNotFound),
    (TRANSIENT_CODES, TransientCloudError),
    (PERMANENT_CODES, PermanentCloudError),
)


def _class_of_code(code: str, message: str) -> type[CloudError] | None:
    folded = code.casefold()
    if folded == "operationnotallowed" and "quota" in message.casefold():
        return QuotaError  # "... results in exceeding approved LowPriorityCores quota"
    for codes, cls in _CLASSES:
        if folded in {known.casefold() for known in codes}:
            return cls
    return None


def classify(
    code: str,
    message: str,
    *,
    status: int | None = None,
    details: Sequence[tuple[str, str]] = (),
    finished_operation: bool = False,
) -> CloudError:
    """The normalised error for an ARM error (``code``, ``message``, HTTP ``status`` when there was an answer).

    The code decides first (a 404 ``ImageNotFound`` is a bad request, not a missing
    instance), then the codes of the error's ``details`` (ARM wraps some errors), then
    the HTTP status. ``finished_operation``: the error is a finished async operation's,
    which no retry of the status check can change, so what is not a reason to try the
    next candidate is permanent.
    """
    cls = _class_of_code(code, message)
    if cls is None:
        for detail_code, detail_message in details:
            cls = _class_of_code(detail_code, detail_message)
            if cls is not None:
                code, message = detail_code, detail_message or message
                break
    if cls is None:
        if finished_operation:
            cls = PermanentCloudError
        elif status == 404:
            cls = InstanceNotFound
        elif status is None or status in (408, 429) or status >= 500:
            cls = TransientCloudError
        elif status >= 400:
            cls = PermanentCloudError
        else:
            cls = TransientCloudError  # a 2xx answer we could not read
    elif finished_operation and cls is TransientCloudError:
        cls = PermanentCloudError
    return cls(message or code or f"HTTP {status}", provider=PROVIDER, code=code or (str(status) if status else ""))


def _error_parts(error: HttpResponseError) -> tuple[str, str, list[tuple[str, str]]]:
    """(code, message, details) of an ARM error answer: ``{"error": {"code", "message", "details"}}``."""
    odata = error.error
    if odata is not None and (odata.code or odata.message):
        details = [(detail.code or "", detail.message or "") for detail in (odata.details or [])]
        return odata.code or "", odata.message or "", details
    body = _json_of(error.response) if error.response is not None else {}
    inner = body.get("error") if isinstance(body.get("error"), dict) else body
    code, message = str(inner.get("code") or ""), str(inner.get("message") or "")
    return code, message or (error.reason or "") or str(error.message or ""), []


def _json_of(response: Any) -> dict[str, Any]:
    try:
        document = json.loads(response.text())
    except (ValueError, TypeError, AttributeError):
        return {}
    return document if isinstance(document, dict) else {}


def cloud_error(error: BaseException) -> CloudError:
    """One normalised ``CloudError`` for anything the Azure SDK raises.

    * an HTTP answer (``HttpResponseError`` and its subclasses): by ARM code, then status;
    * no answer (``ServiceRequestError``: could not connect; ``ServiceResponseError``:
      connection dropped or timed out): ``TransientCloudError``;
    * the credential could not get a token (``ClientAuthenticationError`` with no
      answer): ``PermanentCloudError`` ``AuthenticationFailed``.
    """
    if isinstance(error, CloudError):
        return error
    if isinstance(error, HttpResponseError) and error.status_code is not None:
        code, message, details = _error_parts(error)
        return classify(code, message, status=error.status_code, details=details)
    if isinstance(error, ClientAuthenticationError):
        return PermanentCloudError(str(error.message or error), provider=PROVIDER, code="AuthenticationFailed")
    if isinstance(error, ServiceRequestError | ServiceResponseError):
        return TransientCloudError(str(error.message or error), provider=PROVIDER, code=type(error).__name__)
    if isinstance(error, AzureError):
        return TransientCloudError(str(error.message or error), provider=PROVIDER, code=type(error).__name__)
    return PermanentCloudError(f"{type(error).__name__}: {error}", provider=PROVIDER)


def operation_error(body: Mapping[str, Any]) -> CloudError:
    """The normalised error of a failed async operation: ``{"status": "Failed", "error": {...}}``."""
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    code, message = str(error.get("code") or ""), str(error.get("message") or "")
    details = [
        (str(detail.get("code") or ""), str(detail.get("message") or ""))
        for detail in error.get("details") or []
        if isinstance(detail, dict)
    ]
    status = str(body.get("status") or "Failed")
    if not code and not message:
        code, message = status, f"the operation ended {status}"
    return classify(code, message, details=details, finished_operation=True)


# --- credentials, authentication, polling -----------------------------------------------------------------------


class StaticTokenCredential:
    """A bearer token used as it is (``AZURE_ACCESS_TOKEN``): for emulators and short runs.

    Implements ``azure.core.credentials.TokenCredential``; the token never refreshes.
    """

    def __init__(self, token: str) -> None:
        self._token = token

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + _TOKEN_LIFETIME_SECONDS)


def _default_credential() -> TokenCredential:
    """``DefaultAzureCredential``: environment (service principal), workload identity, managed identity, ..."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


class _PlainHttpAuthenticationPolicy(ARMChallengeAuthenticationPolicy):
    """ARM's bearer-token policy, allowed to send the token over plain HTTP.

    azure-core's ``BearerTokenCredentialPolicy`` refuses non-https URLs unless the
    request context says ``enforce_https: False``; this policy says so for every
    request. It is installed only when the configured ARM endpoint itself is
    ``http://`` (an emulator), so a real endpoint keeps the check.
    """

    def on_request(self, request: PipelineRequest) -> None:
        request.context["enforce_https"] = False
        super().on_request(request)


class _OneStepPolling(ARMPolling):
    """ARM's long-running-operation polling, one status request at a time and never in the background.

    ``LROPoller`` runs its polling method's ``run()`` in a thread that sleeps and polls
    until the operation ends; here ``run()`` does nothing, so a ``begin_*`` call returns
    as soon as the initial request is answered, and its ``continuation_token()`` (a JSON
    snapshot of that answer: the ``Azure-AsyncOperation`` URL among its headers) is what
    the workflow keeps.

    To check on the operation later, ``begin_create_or_update(..., continuation_token=token,
    polling=_OneStepPolling())`` rebuilds the poller from the token (no request), and
    ``check()`` calls ``update_status()`` once: one GET of the Azure-AsyncOperation URL
    (``{"status": "InProgress" | "Succeeded" | "Failed" | "Canceled", "error": {...}}``)
    through the client's own pipeline (authentication, timeouts). The status answer
    itself is kept (``last_response``) for a failure's error. This relies only on
    azure-core's documented polling interface (``from_continuation_token``,
    ``initialize``, ``update_status``, ``status``, ``finished``), the same one
    ``LROPoller`` drives; tokens are azure-core's versioned JSON tokens, so they stay
    valid across worker restarts.
    """

    def __init__(self) -> None:
        super().__init__(timeout=0)
        self.last_response: Any = None

    def run(self) -> None:
        """Never wait: the caller checks again later, one request per check."""

    def request_status(self, status_link: str) -> Any:
        pipeline_response = super().request_status(status_link)
        self.last_response = pipeline_response.http_response
        return pipeline_response

    def check(self) -> str:
        """One status request (if the operation is not already known to be over); its status."""
        if self.finished():
            return self.status()
        try:
            self.update_status()
        except (BadStatus, BadResponse, OperationFailed) as exc:
            response = self.last_response
            if response is not None and response.status_code >= 400:
                if response.status_code == 404:
                    return "Unknown"  # the operation record expired: the VM itself tells
                raise cloud_error(HttpResponseError(response=response)) from exc
            raise TransientCloudError(f"unreadable operation status: {exc}", provider=PROVIDER) from exc
        return self.status()


def _status_is(status: str, *names: str) -> bool:
    return str(getattr(status, "value", status)).casefold() in {name.casefold() for name in names}


# --- the adapter ---------------------------------------------------------------------------------------------------


class AzureCloud(base.CloudAdapter):
    """Azure Spot VMs through Azure Resource Manager (azure-mgmt-compute / azure-mgmt-network)."""

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
            options["authentication_policy"] = _PlainHttpAuthenticationPolicy(credential, *scopes)
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
            credential=StaticTokenCredential(token) if token else _default_credential(),
            base_url=settings.AZURE_RESOURCE_MANAGER_URL,
            subnet_ids=settings.AZURE_SUBNET_IDS,
            image=settings.AZURE_IMAGE,
            admin_username=settings.AZURE_ADMIN_USERNAME,
            ssh_public_key=settings.AZURE_SSH_PUBLIC_KEY,
            address=settings.CLOUD_INSTANCE_ADDRESS,
            timeout=settings.CLOUD_API_TIMEOUT_SECONDS,
        )

    # --- create ---------------------------------------------------------------------------------------------------

    def create_spot_instance(self, request: InstanceRequest) -> InstanceInfo:
        name = _vm_name(request.idempotency_token)
        body = self._vm_body(name, request)
        try:
            poller = self._compute.virtual_machines.begin_create_or_update(
                self.resource_group, name, body, polling=_OneStepPolling()
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
        )

    def _vm_body(self, name: str, request: InstanceRequest) -> dict[str, Any]:
        """The VM resource to PUT, as ARM's REST API spells it."""
        subnet_id = self.subnet_ids.get(request.region)
        if not subnet_id:
            raise PermanentCloudError(
                f"no subnet configured for Azure region {request.region!r} (AZURE_SUBNET_IDS)",
                provider=PROVIDER,
                code="SubnetNotConfigured",
            )
        if not self.ssh_public_key:
            raise PermanentCloudError(
                "no SSH public key configured for Azure VMs (AZURE_SSH_PUBLIC_KEY)",
                provider=PROVIDER,
                code="SshKeyNotConfigured",
            )
        custom_data = base64.b64encode(base.startup_script(request).encode()).decode("ascii")
        body: dict[str, Any] = {
            "location": request.region,
            "tags": dict(request.tags),
            "properties": {
                "priority": "Spot",
                "evictionPolicy": "Delete",
                "billingProfile": {"maxPrice": float(request.max_price_per_hour)},
                "hardwareProfile": {"vmSize": request.instance_type},
                "storageProfile": {
                    "imageReference": _image_reference(request.image_id or self.image),
                    "osDisk": {
                        "createOption": "FromImage",
                        "deleteOption": "Delete",
                        "managedDisk": {"storageAccountType": "StandardSSD_LRS"},
                    },
                },
                "osProfile": {
                    "computerName": name,
                    "adminUsername": self.admin_username,
                    "customData": custom_data,
                    "linuxConfiguration": {
                        "disablePasswordAuthentication": True,
                        "ssh": {
                            "publicKeys": [
                                {
                                    "path": f"/home/{self.admin_username}/.ssh/authorized_keys",
                                    "keyData": self.ssh_public_key,
                                }
                            ]
                        },
                    },
                },
                "networkProfile": {
                    "networkApiVersion": NETWORK_API_VERSION,
                    "networkInterfaceConfigurations": [
                        {
                            "name": _NIC_CONFIG,
                            "properties": {
                                "primary": True,
                                "deleteOption": "Delete",
                                "ipConfigurations": [
                                    {
                                        "name": _IP_CONFIG,
                                        "properties": {
                                            "primary": True,
                                            "subnet": {"id": subnet_id},
                                            "publicIPAddressConfiguration": {
                                                "name": _PUBLIC_IP_CONFIG,
                                                "sku": {"name": "Standard", "tier": "Regional"},
                                                "properties": {
                                                    "deleteOption": "Delete",
                                                    "publicIPAllocationMethod": "Static",
                                                },
                                            },
                                        },
                                    }
                                ],
                            },
                        }
                    ],
                },
            },
        }
        zone = _zone_number(request.region, request.availability_zone)
        if zone:
            body["zones"] = [zone]
        return body

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
                    instance_id=name, state=InstanceState.PREEMPTED, region=region, state_reason="Spot eviction"
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
        polling = _OneStepPolling()
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
            raise operation_error(_json_of(response) if response is not None else {"status": status})
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
        if deleting:
            if self._evicted(vm["name"]):
                return InstanceState.PREEMPTED, "Spot eviction"
            return InstanceState.TERMINATED, "being deleted"
        if power == "running":
            return InstanceState.RUNNING, ""
        if failure is not None or _status_is(provisioning, "Failed"):
            raise _provisioning_error(failure)
        if power in ("stopping", "deallocating"):
            return InstanceState.STOPPING, f"PowerState/{power}"
        if power in ("stopped", "deallocated"):
            if self._evicted(vm["name"]):
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
        )


def _vm_name(token: str) -> str:
    if not _VM_NAME.match(token):
        raise PermanentCloudError(f"{token!r} is not a valid Azure VM name", provider=PROVIDER, code="InvalidParameter")
    return token


def _zone_number(region: str, availability_zone: str) -> str:
    """``"1"`` for ``eastus-1``; "" for a regional pool (``eastus`` or "")."""
    prefix = f"{region}-"
    if availability_zone.startswith(prefix) and availability_zone[len(prefix) :].isdigit():
        return availability_zone[len(prefix) :]
    return ""


def _image_reference(image: str) -> dict[str, str]:
    """``publisher:offer:sku:version`` (a marketplace image) or an image's resource id."""
    if image.startswith("/"):
        return {"id": image}
    parts = image.split(":")
    if len(parts) != 4 or not all(parts):
        raise PermanentCloudError(
            f"Azure image {image!r} is neither publisher:offer:sku:version nor an image resource id",
            provider=PROVIDER,
            code="InvalidParameter",
        )
    publisher, offer, sku, version = parts
    return {"publisher": publisher, "offer": offer, "sku": sku, "version": version}


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


def _provisioning_error(status: Mapping[str, Any] | None) -> CloudError:
    """The error of a VM whose provisioning failed: instance view ``ProvisioningState/failed/<Code>``."""
    if status is None:
        return PermanentCloudError("VM provisioning failed", provider=PROVIDER, code="ProvisioningFailed")
    code = str(status.get("code") or "").split("/", 2)
    reason = code[2] if len(code) > 2 else "ProvisioningFailed"
    message = str(status.get("message") or status.get("displayStatus") or "Provisioning failed")
    return classify(reason, message, finished_operation=True)


base.register_cloud_factory("azure", AzureCloud.from_settings)
