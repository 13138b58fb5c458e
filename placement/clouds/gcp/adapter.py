"""GCP: Spot VMs through the Compute Engine API, and Spot VM prices from the Cloud Billing Catalog API.

``GcpCloud`` (backend ``gcp``) runs instances with google-cloud-compute over its REST
transport. Instance ids are ``"<zone>/<name>"``: Compute Engine names an instance within
a zone and every call about it needs the zone, while the workflow only keeps the id and
the region. The name is the request's idempotency token, and the insert's ``requestId`` a
UUID derived from it, so a retried create finds the instance it made. Creates never wait:
they return the zone operation (``"<zone>/<operation name>"``) for ``get_instance_status``
to follow, one call per check.

Prices: ``GET https://cloudbilling.googleapis.com/v1/services/6F81-5844-456A/skus?key=...``
(6F81-5844-456A is Compute Engine) answers pages of ``{"skus": [...], "nextPageToken": "..."}``.
Compute Engine prices a machine by its parts, not by machine type: one SKU per family
for a vCPU-hour ("N2 Instance Core running in Americas"), one for a GiB-hour of memory
("N2 Instance Ram ..."), one per GPU model ("Nvidia L4 GPU ..."), each with
``category.usageType`` "OnDemand" or "Preemptible" (Spot, described "Spot Preemptible
..."), the regions it applies to in ``serviceRegions`` and its price in
``pricingInfo[].pricingExpression.tieredRates[].unitPrice`` as ``{units, nanos}``.

A machine type's price is vCPU x core price + GiB x memory price + GPUs x GPU price,
for the machine types the catalog holds (their shapes come from the catalog). Spot
prices are per region: each comes back for every zone (``availability_zone`` "").
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
import threading
import uuid
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.utils import timezone
from google.api_core import exceptions as google_exceptions
from google.auth import exceptions as auth_exceptions

from arbitrage.env import ConfigError
from placement.clouds import base
from placement.clouds.base import (
    CapacityError,
    CloudAdapter,
    CloudError,
    InstanceInfo,
    InstanceNotFound,
    InstanceRequest,
    InstanceState,
    ObservedPrice,
    PermanentCloudError,
    PriceSource,
    QuotaError,
    TransientCloudError,
)
from placement.clouds.http import get_json

if TYPE_CHECKING:  # the SDK takes seconds to import: it loads when a GcpCloud first calls the API
    from google.cloud import compute_v1

logger = logging.getLogger(__name__)

COMPUTE_ENGINE_SERVICE = "6F81-5844-456A"
MAX_PAGES = 200
SPOT, ON_DEMAND = "Preemptible", "OnDemand"

# "Spot Preemptible N2 Instance Core running in Americas", "Compute optimized Ram running in Iowa",
# "T2A Arm Instance Core running in Americas", "A2 Instance Ram running in Americas"
_PART = re.compile(
    r"^(?:Spot Preemptible )?(?:Preemptible )?(?P<family>Compute optimized|[A-Z][A-Z0-9]+)"
    r"(?: (?:AMD|Arm|Intel))?(?: Instance)? (?P<part>Core|Ram) running in "
)
# "Nvidia L4 GPU running in Americas", "Spot Preemptible Nvidia H100 80GB GPU running in ...",
# "Nvidia Tesla T4 GPU attached to Spot Preemptible VMs running in Americas"
_GPU = re.compile(r"^(?:Spot Preemptible )?Nvidia (?P<model>Tesla T4|L4|Tesla A100|H100 80GB) GPU ")
_GPU_TYPES = {"Tesla T4": "T4", "L4": "L4", "Tesla A100": "A100", "H100 80GB": "H100"}
_FAMILIES = {"Compute optimized": "c2"}


def unit_price(sku: dict[str, Any]) -> Decimal:
    """The SKU's current per-unit price (the last tier: the first is sometimes a free tier)."""
    rate = sku["pricingInfo"][-1]["pricingExpression"]["tieredRates"][-1]["unitPrice"]
    return Decimal(rate.get("units") or 0) + Decimal(rate.get("nanos") or 0) / Decimal(1_000_000_000)


class GcpPriceSource(PriceSource):
    provider = "gcp"

    def __init__(self, *, base_url: str | None = None, api_key: str | None = None, timeout: float | None = None):
        self.base_url = (base_url or settings.GCP_BILLING_API_URL).rstrip("/")
        self.api_key = settings.GCP_BILLING_API_KEY if api_key is None else api_key
        self.timeout = timeout or settings.PRICE_REFRESH_TIMEOUT_SECONDS

    def fetch_spot_prices(self, *, regions: list[str]) -> list[ObservedPrice]:
        observed_at = timezone.now()
        parts = self._unit_prices(set(regions))
        prices = []
        for name, vcpu, memory_gb, gpu_count, gpu_type in self._machine_types():
            family = name.split("-", 1)[0]
            for region in regions:
                spot = self._machine_price(parts, SPOT, region, family, vcpu, memory_gb, gpu_count, gpu_type)
                if spot is None:
                    continue
                prices.append(
                    ObservedPrice(
                        provider=self.provider,
                        region=region,
                        availability_zone="",
                        instance_type=name,
                        spot_price=spot,
                        on_demand_price=self._machine_price(
                            parts, ON_DEMAND, region, family, vcpu, memory_gb, gpu_count, gpu_type
                        ),
                        observed_at=observed_at,
                    )
                )
        return prices

    @staticmethod
    def _machine_types() -> list[tuple]:
        from placement.models import InstanceType

        return list(
            InstanceType.objects.filter(provider="gcp")
            .order_by("name")
            .values_list("name", "vcpu", "memory_gb", "gpu_count", "gpu_type")
        )

    @staticmethod
    def _machine_price(parts, usage, region, family, vcpu, memory_gb, gpu_count, gpu_type) -> Decimal | None:
        core = parts.get((usage, region, family, "Core"))
        ram = parts.get((usage, region, family, "Ram"))
        gpu = parts.get((usage, region, "gpu", gpu_type)) if gpu_count else Decimal(0)
        if core is None or ram is None or gpu is None:
            return None
        return (core * vcpu + ram * Decimal(str(memory_gb)) + gpu * gpu_count).quantize(Decimal("0.000001"))

    def _unit_prices(self, regions: set[str]) -> dict[tuple[str, str, str, str], Decimal]:
        """{(usage, region, family | "gpu", "Core" | "Ram" | GPU type): price per unit-hour}."""
        parts: dict[tuple[str, str, str, str], Decimal] = {}
        url = f"{self.base_url}/services/{COMPUTE_ENGINE_SERVICE}/skus"
        fields = {"currencyCode": "USD", "pageSize": "5000"}
        if self.api_key:
            fields["key"] = self.api_key
        for _page in range(MAX_PAGES):
            document = get_json(url, provider=self.provider, timeout=self.timeout, fields=fields)
            try:
                for sku in document.get("skus", []):
                    self._collect(sku, regions, parts)
            except (KeyError, IndexError, TypeError, ArithmeticError) as exc:
                raise PermanentCloudError(
                    f"unexpected Cloud Billing answer: {type(exc).__name__} {exc}", provider=self.provider
                ) from None
            token = document.get("nextPageToken")
            if not token:
                return parts
            fields = {**fields, "pageToken": token}
        raise PermanentCloudError(f"more than {MAX_PAGES} pages of Compute Engine SKUs", provider=self.provider)

    @staticmethod
    def _collect(sku: dict[str, Any], regions: set[str], parts: dict) -> None:
        category = sku["category"]
        usage = category.get("usageType")
        if category.get("resourceFamily") != "Compute" or usage not in (SPOT, ON_DEMAND):
            return
        description = sku["description"]
        # A Spot SKU says so in its description too; anything else is a SKU we do not model.
        if (usage == SPOT) != ("Preemptible" in description.split(" running in ")[0]):
            return
        if match := _GPU.match(description):
            key: tuple[str, str] = ("gpu", _GPU_TYPES[match["model"]])
        elif match := _PART.match(description):
            key = (_FAMILIES.get(match["family"], match["family"].lower()), match["part"])
        else:
            return
        price = unit_price(sku)
        for region in regions.intersection(sku.get("serviceRegions", [])):
            parts[(usage, region, *key)] = price


# --- Spot VMs: the Compute Engine API ----------------------------------------------------------------

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
PREEMPTED_OPERATION = "compute.instances.preempted"
# Instance names: RFC 1035 labels, as Compute Engine requires.
_INSTANCE_NAME = re.compile(r"^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$")
_ZONE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z0-9]+$")
# The insert's requestId is uuid5(this, token): the same token always sends the same request id.
_REQUEST_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://compute-arbitrage/gcp/instances.insert")
_LABEL_INVALID = re.compile(r"[^a-z0-9_-]")
_LABEL_MAX = 63
_PAGE_SIZE = 500

_STATES = {
    "PROVISIONING": InstanceState.PENDING,
    "STAGING": InstanceState.PENDING,
    "RUNNING": InstanceState.RUNNING,
    "STOPPING": InstanceState.STOPPING,
    "SUSPENDING": InstanceState.STOPPING,
    "REPAIRING": InstanceState.PENDING,
    "STOPPED": InstanceState.TERMINATED,
    "SUSPENDED": InstanceState.TERMINATED,
    "TERMINATED": InstanceState.TERMINATED,
}

# Error codes, as operation errors (``error.errors[].code``) and HTTP errors (``error.errors[].reason``) say them.
CAPACITY_CODES = frozenset(
    {
        "ZONE_RESOURCE_POOL_EXHAUSTED",
        "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
        "RESOURCE_POOL_EXHAUSTED",
        "REGION_RESOURCE_POOL_EXHAUSTED",
        "resourceExhausted",
    }
)
CAPACITY_MESSAGES = ("does not have enough resources", "resource pool exhausted")
QUOTA_CODES = frozenset({"QUOTA_EXCEEDED", "quotaExceeded"})
TRANSIENT_CODES = frozenset(
    {
        "rateLimitExceeded",
        "userRateLimitExceeded",
        "RATE_LIMIT_EXCEEDED",
        "RESOURCE_OPERATION_RATE_EXCEEDED",
        "backendError",
        "internalError",
        "INTERNAL_ERROR",
        "resourceNotReady",
        "RESOURCE_NOT_READY",
    }
)
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
NOT_FOUND_CODES = frozenset({"notFound", "RESOURCE_NOT_FOUND"})


def cloud_error(
    code: str, message: str, *, status: int | None = None, not_found: type[CloudError] = InstanceNotFound
) -> CloudError:
    """The normalised error for what Compute Engine answered: an HTTP error's reason, or an operation's error code.

    ``status`` is the HTTP status when there is one; ``not_found`` the class for a 404 (an instance
    call's 404 is ``InstanceNotFound``; a create's is a missing image, network or machine type).
    """
    kwargs = {"provider": "gcp", "code": code or (str(status) if status else "")}
    lowered = message.lower()
    if code in CAPACITY_CODES or any(words in lowered for words in CAPACITY_MESSAGES):
        return CapacityError(message, **kwargs)
    if code in TRANSIENT_CODES:  # rate limits are "quota" errors too, but only for a moment
        return TransientCloudError(message, **kwargs)
    if code in QUOTA_CODES or (status == 403 and re.search(r"\bquota\b.*\bexceeded\b", lowered)):
        return QuotaError(message, **kwargs)
    if status in TRANSIENT_STATUSES:
        return TransientCloudError(message, **kwargs)
    if status == 404 or code in NOT_FOUND_CODES:
        return not_found(message, **kwargs)
    return PermanentCloudError(message, **kwargs)


#: What the SDK raises for the cloud's answers and for auth or network failures (anything else is a bug).
SDK_ERRORS = (google_exceptions.GoogleAPIError, auth_exceptions.GoogleAuthError, requests.RequestException)


def error_from_exception(exc: Exception, *, not_found: type[CloudError] = InstanceNotFound) -> CloudError:
    """Normalise what the SDK raised: an API error, an authentication failure, a network failure."""
    if isinstance(exc, CloudError):
        return exc
    if isinstance(exc, google_exceptions.GoogleAPICallError):
        message = _api_message(exc)
        reasons = [item.get("reason", "") for item in exc.errors if isinstance(item, dict)]
        code = next((reason for reason in reasons if reason), "") or (exc.reason or "")
        return cloud_error(code, message, status=exc.code, not_found=not_found)
    if isinstance(exc, google_exceptions.RetryError | auth_exceptions.TransportError | requests.RequestException):
        return TransientCloudError(f"{type(exc).__name__}: {exc}", provider="gcp")
    if isinstance(exc, auth_exceptions.GoogleAuthError) and getattr(exc, "retryable", False):
        return TransientCloudError(f"{type(exc).__name__}: {exc}", provider="gcp")
    return PermanentCloudError(f"{type(exc).__name__}: {exc}", provider="gcp")


def _api_message(exc: google_exceptions.GoogleAPICallError) -> str:
    """The cloud's own message, without the "POST https://...: " the SDK puts before it."""
    response = getattr(exc, "response", None)
    try:
        message = response.json()["error"]["message"]
    except Exception:  # noqa: BLE001 - not a Google error body: keep the SDK's words
        message = None
    return message if isinstance(message, str) and message else str(exc.message)


def operation_error(operation: compute_v1.Operation) -> CloudError:
    """The normalised error of a failed zone operation (its first error item decides the class).

    The insert is over: polling its operation again cannot succeed, so what would be transient
    for an API call (an internal error) is permanent here; only a new create could do better.
    """
    items = list(operation.error.errors)
    code = items[0].code if items else ""
    message = "; ".join(item.message for item in items if item.message) or operation.http_error_message
    error = cloud_error(
        code,
        message or f"operation {operation.name} failed",
        status=operation.http_error_status_code or None,
        not_found=PermanentCloudError,
    )
    if isinstance(error, TransientCloudError):
        error = PermanentCloudError(error.message, provider="gcp", code=error.code)
    return error


def instance_name(token: str) -> str:
    """The instance's name: the idempotency token itself when it is a valid name (``ca-<32 hex>`` is)."""
    if _INSTANCE_NAME.match(token):
        return token
    return "ca-" + uuid.uuid5(_REQUEST_ID_NAMESPACE, token).hex


def request_id(token: str) -> str:
    """The insert's ``requestId``: a UUID, the same for every retry of one token."""
    return str(uuid.uuid5(_REQUEST_ID_NAMESPACE, token))


def label(text: str, *, key: bool = False) -> str:
    """A GCP label key or value: lowercase letters, digits, ``_`` and ``-``, at most 63 characters."""
    text = _LABEL_INVALID.sub("-", text.lower())
    if key and not text[:1].isalpha():
        text = "k-" + text
    return text[:_LABEL_MAX]


def region_of(zone: str) -> str:
    return zone.rsplit("-", 1)[0]


def _last_segment(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def _timestamp(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


class GcpCloud(CloudAdapter):
    """Spot VMs on Compute Engine: create, follow, terminate, list the ones we manage.

    Every call is one API request (or one page of them) with the configured timeout and no
    client-side retries: transient failures surface as ``TransientCloudError`` for the
    workflow's own retry policy, and a worker never blocks on an operation.
    """

    provider = "gcp"

    def __init__(
        self,
        *,
        project: str,
        credentials: Any = None,
        endpoint: str = "",
        network: str = "global/networks/default",
        subnetworks: dict[str, str] | None = None,
        image: str = "projects/debian-cloud/global/images/family/debian-12",
        address: str = "public",
        timeout: float = 30,
    ) -> None:
        if not project:
            raise ValueError("a GCP project is required")
        if address not in ("public", "private"):
            raise ValueError(f"address is public or private, got {address!r}")
        self.project = project
        self.credentials = credentials  # None: Application Default Credentials, found on first use
        self.endpoint = endpoint
        self.network = network
        self.subnetworks = dict(subnetworks or {})
        self.image = image
        self.address = address
        self.timeout = timeout
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}
        self._clients_pid = 0

    @classmethod
    def from_settings(cls, provider: str) -> GcpCloud:
        """The adapter ``CLOUD_BACKENDS=gcp=gcp`` asks for, configured by the GCP_* settings."""
        if provider != "gcp":
            raise ConfigError("CLOUD_BACKENDS", f"the gcp backend runs provider gcp only, not {provider!r}")
        if not settings.GCP_PROJECT:
            raise ConfigError("GCP_PROJECT", "required when CLOUD_BACKENDS runs gcp on the gcp backend")
        credentials = None
        if settings.GCP_CREDENTIALS_FILE:
            from google.oauth2 import service_account

            try:
                credentials = service_account.Credentials.from_service_account_file(
                    settings.GCP_CREDENTIALS_FILE, scopes=[CLOUD_PLATFORM_SCOPE]
                )
            except (OSError, ValueError) as exc:
                raise ConfigError("GCP_CREDENTIALS_FILE", f"cannot load the service-account key: {exc}") from None
        elif settings.GCP_COMPUTE_ENDPOINT:
            from google.auth.credentials import AnonymousCredentials

            credentials = AnonymousCredentials()  # an emulator: nothing to authenticate to
        return cls(
            project=settings.GCP_PROJECT,
            credentials=credentials,
            endpoint=settings.GCP_COMPUTE_ENDPOINT or "",
            network=settings.GCP_NETWORK,
            subnetworks=settings.GCP_SUBNETWORKS,
            image=settings.GCP_IMAGE,
            address=settings.CLOUD_INSTANCE_ADDRESS,
            timeout=settings.CLOUD_API_TIMEOUT_SECONDS,
        )

    # --- clients -------------------------------------------------------------------------------------

    def _client(self, kind: str) -> Any:
        """The ``instances`` or ``zone_operations`` client, made on first use in this process.

        Made lazily, and again after a fork (Celery's prefork pool), so no HTTP connection is
        shared between processes and starting the app never waits for credentials.
        """
        with self._lock:
            if self._clients_pid != os.getpid():
                self._clients, self._clients_pid = {}, os.getpid()
            if kind not in self._clients:
                self._clients[kind] = self._make_client(kind)
            return self._clients[kind]

    def _make_client(self, kind: str) -> Any:
        from google.api_core.client_options import ClientOptions
        from google.cloud import compute_v1
        from google.cloud.compute_v1.services.instances.transports import InstancesRestTransport
        from google.cloud.compute_v1.services.zone_operations.transports import ZoneOperationsRestTransport

        if self.credentials is None:
            import google.auth

            try:
                self.credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
            except auth_exceptions.GoogleAuthError as exc:
                raise PermanentCloudError(f"no GCP credentials: {exc}", provider=self.provider) from None
        client_class, transport_class = {
            "instances": (compute_v1.InstancesClient, InstancesRestTransport),
            "zone_operations": (compute_v1.ZoneOperationsClient, ZoneOperationsRestTransport),
        }[kind]
        options, scheme = None, "https"
        if self.endpoint:
            parts = urlsplit(self.endpoint)
            scheme = parts.scheme or "https"
            # The REST transport puts its own scheme before the host: an emulator speaks plain http.
            options = ClientOptions(api_endpoint=parts.netloc + parts.path.rstrip("/"))
        return client_class(
            credentials=self.credentials,
            transport=functools.partial(transport_class, url_scheme=scheme),
            client_options=options,
        )

    def _call(self, kind: str, method: str, request: Any, *, not_found: type[CloudError] = InstanceNotFound) -> Any:
        """One API call, errors normalised. No SDK retries: the workflow retries transient errors itself."""
        client = self._client(kind)
        try:
            return getattr(client, method)(request=request, retry=None, timeout=self.timeout)
        except SDK_ERRORS as exc:
            raise error_from_exception(exc, not_found=not_found) from exc

    # --- ids -----------------------------------------------------------------------------------------

    def _zone_and_name(self, instance_id: str, region: str) -> tuple[str, str]:
        """``"<zone>/<name>"`` split, if it names an instance of ``region``; else ``InstanceNotFound``."""
        zone, _, name = instance_id.partition("/")
        if not (_ZONE.match(zone) and _INSTANCE_NAME.match(name)) or region_of(zone) != region:
            raise InstanceNotFound(
                f"no GCP instance {instance_id!r} in region {region!r} (ids are '<zone>/<name>')",
                provider=self.provider,
                code="notFound",
            )
        return zone, name

    # --- create --------------------------------------------------------------------------------------

    def create_spot_instance(self, request: InstanceRequest) -> InstanceInfo:
        if not request.idempotency_token:
            raise PermanentCloudError("an idempotency token is required", provider=self.provider)
        zone = request.availability_zone
        if not _ZONE.match(zone or "") or region_of(zone) != request.region:
            raise PermanentCloudError(
                f"{zone!r} is not a zone of region {request.region!r}", provider=self.provider, code="invalid"
            )
        from google.cloud import compute_v1

        name = instance_name(request.idempotency_token)
        try:
            operation = self._call(
                "instances",
                "insert_unary",
                compute_v1.InsertInstanceRequest(
                    project=self.project,
                    zone=zone,
                    instance_resource=self._instance_resource(request, name),
                    request_id=request_id(request.idempotency_token),
                ),
                not_found=PermanentCloudError,  # a missing image, network or machine type
            )
        except PermanentCloudError as error:
            if error.code != "alreadyExists":
                raise
            # A retry after the request id was forgotten: the first create made the instance.
            logger.info("gcp: %s/%s already exists; the create is a retry", zone, name)
            try:
                return self._describe(zone, name)
            except InstanceNotFound:
                raise TransientCloudError(error.message, provider=self.provider, code=error.code) from None
        if operation.status == compute_v1.Operation.Status.DONE and operation.error.errors:
            raise operation_error(operation)
        logger.info("gcp: inserting %s/%s (operation %s)", zone, name, operation.name)
        return InstanceInfo(
            instance_id=f"{zone}/{name}",
            state=InstanceState.PENDING,
            region=request.region,
            availability_zone=zone,
            instance_type=request.instance_type,
            tags=self._labels(request.tags),
            operation=f"{zone}/{operation.name}",
        )

    @staticmethod
    def _labels(tags: dict[str, str]) -> dict[str, str]:
        return {label(key, key=True): label(value) for key, value in tags.items()}

    def _instance_resource(self, request: InstanceRequest, name: str) -> compute_v1.Instance:
        from google.cloud import compute_v1

        zone = request.availability_zone
        interface = compute_v1.NetworkInterface(
            network=self.network,
            access_configs=[compute_v1.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT")],
        )
        if subnetwork := self.subnetworks.get(request.region):
            interface.subnetwork = subnetwork
        return compute_v1.Instance(
            name=name,
            machine_type=f"zones/{zone}/machineTypes/{request.instance_type}",
            labels=self._labels(request.tags),
            scheduling=compute_v1.Scheduling(
                provisioning_model="SPOT",
                instance_termination_action="DELETE",
                automatic_restart=False,
                on_host_maintenance="TERMINATE",
            ),
            disks=[
                compute_v1.AttachedDisk(
                    boot=True,
                    auto_delete=True,
                    initialize_params=compute_v1.AttachedDiskInitializeParams(
                        source_image=request.image_id or self.image
                    ),
                )
            ],
            network_interfaces=[interface],
            metadata=compute_v1.Metadata(
                items=[compute_v1.Items(key="startup-script", value=base.startup_script(request))]
            ),
        )

    # --- status --------------------------------------------------------------------------------------

    def get_instance_status(self, instance_id: str, region: str, *, operation: str = "") -> InstanceInfo:
        zone, name = self._zone_and_name(instance_id, region)
        if operation:
            from google.cloud import compute_v1

            op_zone, _, op_name = operation.partition("/")
            try:
                current = self._call(
                    "zone_operations",
                    "get",
                    compute_v1.GetZoneOperationRequest(project=self.project, zone=op_zone or zone, operation=op_name),
                )
            except InstanceNotFound:
                current = None  # operations are kept for a while only: the instance tells the rest
            if current is not None and current.status != compute_v1.Operation.Status.DONE:
                return InstanceInfo(
                    instance_id=instance_id,
                    state=InstanceState.PENDING,
                    region=region,
                    availability_zone=zone,
                    state_reason=f"operation {current.operation_type or 'insert'} {current.status.name.lower()}",
                    operation=operation,
                )
            if current is not None and current.error.errors:
                raise operation_error(current)
        return self._describe(zone, name)

    def _describe(self, zone: str, name: str) -> InstanceInfo:
        from google.cloud import compute_v1

        try:
            instance = self._call(
                "instances", "get", compute_v1.GetInstanceRequest(project=self.project, zone=zone, instance=name)
            )
        except InstanceNotFound:
            # A Spot VM whose termination action is DELETE is gone once it has been preempted.
            if preempted_at := self._preempted(zone, name):
                return InstanceInfo(
                    instance_id=f"{zone}/{name}",
                    state=InstanceState.PREEMPTED,
                    region=region_of(zone),
                    availability_zone=zone,
                    state_reason=f"preempted at {preempted_at} (instance deleted)",
                )
            raise
        info = self._info(instance)
        spot = instance.scheduling.provisioning_model == "SPOT" or instance.scheduling.preemptible
        if (
            spot
            and info.state in (InstanceState.STOPPING, InstanceState.TERMINATED)
            and (preempted_at := self._preempted(zone, name, since=info.launched_at))
        ):
            info = dataclasses.replace(info, state=InstanceState.PREEMPTED, state_reason=f"preempted at {preempted_at}")
        return info

    def _preempted(self, zone: str, name: str, *, since: datetime | None = None) -> str:
        """When the zone's ``compute.instances.preempted`` operation for this instance happened ("" if none)."""
        from google.cloud import compute_v1

        pages = self._call(
            "zone_operations",
            "list",
            compute_v1.ListZoneOperationsRequest(
                project=self.project,
                zone=zone,
                filter=f'operationType = "{PREEMPTED_OPERATION}"',
                max_results=_PAGE_SIZE,
            ),
        )
        suffix = f"/zones/{zone}/instances/{name}"
        try:
            for operation in pages:
                if not operation.target_link.endswith(suffix):
                    continue
                at = _timestamp(operation.insert_time)
                if since is not None and at is not None and at < since:
                    continue  # an earlier instance of the same name
                return operation.insert_time or "an unknown time"
        except SDK_ERRORS as exc:  # a later page's failure, normalised
            raise error_from_exception(exc) from exc
        return ""

    def _info(self, instance: compute_v1.Instance) -> InstanceInfo:
        zone = _last_segment(instance.zone)
        interface = instance.network_interfaces[0] if instance.network_interfaces else None
        address = ""
        if interface is not None:
            nat = next((config.nat_i_p for config in interface.access_configs if config.nat_i_p), "")
            address = interface.network_i_p if self.address == "private" else nat
        return InstanceInfo(
            instance_id=f"{zone}/{instance.name}",
            state=_STATES.get(instance.status, InstanceState.PENDING),
            region=region_of(zone),
            availability_zone=zone,
            instance_type=_last_segment(instance.machine_type),
            public_ip=address,
            tags=dict(instance.labels),
            launched_at=_timestamp(instance.creation_timestamp),
            state_reason=instance.status_message,
        )

    # --- terminate and list --------------------------------------------------------------------------

    def terminate_instance(self, instance_id: str, region: str) -> None:
        from google.cloud import compute_v1

        try:
            zone, name = self._zone_and_name(instance_id, region)
            operation = self._call(
                "instances",
                "delete_unary",
                compute_v1.DeleteInstanceRequest(project=self.project, zone=zone, instance=name),
            )
        except InstanceNotFound:
            logger.info("gcp: terminate of unknown instance %s in %s", instance_id, region)
            return
        logger.info("gcp: deleting %s (operation %s)", instance_id, operation.name)

    def list_managed_instances(self, region: str) -> list[InstanceInfo]:
        from google.cloud import compute_v1

        pages = self._call(
            "instances",
            "aggregated_list",
            compute_v1.AggregatedListInstancesRequest(
                project=self.project,
                filter=f'labels.{base.MANAGED_BY_TAG} = "{base.MANAGED_BY_VALUE}"',
                max_results=_PAGE_SIZE,
            ),
        )
        infos = []
        try:
            for scope, scoped in pages:
                zone = scope.removeprefix("zones/")
                if not scope.startswith("zones/") or region_of(zone) != region:
                    continue
                for instance in scoped.instances:
                    if instance.labels.get(base.MANAGED_BY_TAG) != base.MANAGED_BY_VALUE:
                        continue
                    info = self._info(instance)
                    if info.state is not InstanceState.TERMINATED:
                        infos.append(info)
        except SDK_ERRORS as exc:  # a later page's failure, normalised
            raise error_from_exception(exc) from exc
        return infos


base.register_cloud_factory("gcp", GcpCloud.from_settings)
