"""The Compute Engine adapter, ``GcpCloud``: Spot VMs, or on-demand ones, through google-cloud-compute (REST).

A spot instance is provisioning model SPOT, deleted when preempted; an on-demand one is the
STANDARD model, never preempted, restarted and live-migrated as Compute Engine does by default.

Instance ids are ``"<zone>/<name>"``: Compute Engine names an instance within a zone and
every call about it needs the zone, while the workflow only keeps the id and the region.
The name is the request's idempotency token, and the insert's ``requestId`` a UUID derived
from it, so a retried create finds the instance it made. Creates never wait: they return
the zone operation (``"<zone>/<operation name>"``) for ``get_instance_status`` to follow,
one call per check.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from django.conf import settings
from google.auth import exceptions as auth_exceptions

from arbitrage.env import ConfigError
from placement.clouds import base, config
from placement.clouds.base import (
    CloudAdapter,
    CloudError,
    InstanceInfo,
    InstanceNotFound,
    InstanceRequest,
    InstanceState,
    Market,
    PermanentCloudError,
    TransientCloudError,
)
from placement.clouds.gcp.errors import SDK_ERRORS, error_from_exception, operation_error
from placement.clouds.gcp.names import (
    INSTANCE_NAME,
    ZONE,
    instance_name,
    label,
    last_segment,
    parse_timestamp,
    region_of,
    request_id,
)

if TYPE_CHECKING:  # the SDK takes seconds to import: it loads when a GcpCloud first calls the API
    from google.cloud import compute_v1

logger = logging.getLogger("placement.clouds.gcp")

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
PREEMPTED_OPERATION = "compute.instances.preempted"
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


class GcpCloud(CloudAdapter):
    """Spot and on-demand VMs on Compute Engine: create, follow, terminate, list the ones we manage.

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
            **config.adapter_options(),
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
        if not (ZONE.match(zone) and INSTANCE_NAME.match(name)) or region_of(zone) != region:
            raise InstanceNotFound(
                f"no GCP instance {instance_id!r} in region {region!r} (ids are '<zone>/<name>')",
                provider=self.provider,
                code="notFound",
            )
        return zone, name

    # --- create --------------------------------------------------------------------------------------

    def create_instance(self, request: InstanceRequest) -> InstanceInfo:
        if not request.idempotency_token:
            raise PermanentCloudError("an idempotency token is required", provider=self.provider)
        zone = request.availability_zone
        if not ZONE.match(zone or "") or region_of(zone) != request.region:
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
            market=request.market,
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
            scheduling=self._scheduling(request.market),
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

    @staticmethod
    def _scheduling(market: Market) -> compute_v1.Scheduling:
        """How the VM is bought and what happens when Compute Engine needs its host back."""
        from google.cloud import compute_v1

        if market is Market.SPOT:
            # Spot VMs cannot restart or live-migrate; deleted on preemption, nothing of them lingers.
            return compute_v1.Scheduling(
                provisioning_model="SPOT",
                instance_termination_action="DELETE",
                automatic_restart=False,
                on_host_maintenance="TERMINATE",
            )
        # No termination action (the API refuses one on STANDARD VMs), and automatic restart and host
        # maintenance left to Compute Engine's defaults: it picks what each machine type supports
        # (live migration for most, TERMINATE for GPU machine types that cannot migrate).
        return compute_v1.Scheduling(provisioning_model="STANDARD", preemptible=False)

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
                    market=Market.SPOT,  # only a Spot VM is preempted
                )
            raise
        info = self._info(instance)
        if (
            info.market is Market.SPOT
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
                at = parse_timestamp(operation.insert_time)
                if since is not None and at is not None and at < since:
                    continue  # an earlier instance of the same name
                return operation.insert_time or "an unknown time"
        except SDK_ERRORS as exc:  # a later page's failure, normalised
            raise error_from_exception(exc) from exc
        return ""

    def _info(self, instance: compute_v1.Instance) -> InstanceInfo:
        zone = last_segment(instance.zone)
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
            instance_type=last_segment(instance.machine_type),
            public_ip=address,
            tags=dict(instance.labels),
            launched_at=parse_timestamp(instance.creation_timestamp),
            state_reason=instance.status_message,
            market=_market(instance.scheduling),
        )

    # --- terminate and list --------------------------------------------------------------------------

    def console_output(self, instance_id: str, region: str, *, offset: int = 0, limit: int = 1 << 20) -> bytes:
        """Not read from Compute Engine yet: returns nothing.

        getSerialPortOutput does take a byte ``start`` (and answers the ``next`` one), but needs
        the instance's zone and serial port 1 enabled in its metadata, which we do not set yet.
        """
        return b""

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


def _market(scheduling: compute_v1.Scheduling) -> Market:
    """SPOT VMs and the older preemptible ones can be reclaimed: spot. STANDARD (the default) is on demand."""
    if scheduling.provisioning_model == "SPOT" or scheduling.preemptible:
        return Market.SPOT
    return Market.ON_DEMAND


base.register_cloud_factory("gcp", GcpCloud.from_settings)
