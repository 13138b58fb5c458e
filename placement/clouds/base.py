"""The cloud-adapter interface, its normalised errors and the registry.

Two roles per cloud, each behind its own small interface:

* ``CloudAdapter`` runs instances: create one in the request's market (spot,
  or on demand: ``InstanceRequest.market``), read its status, terminate it,
  list the ones we manage (tag ``managed-by``), read its console output from a
  byte offset (``console_output``, the workload's log). ``create_spot_instance`` is
  ``create_instance`` with the market forced to spot, for existing callers.
  ``InstanceInfo.market`` says which market an instance was bought in, as the
  cloud describes it; a GCP or Azure status check made while the create operation
  still runs reads only the operation, which does not say, and reports the default.
* ``PriceSource`` reads current spot prices for the catalog refresh.

Both are registered by provider name (``aws``, ``gcp``, ``azure``) when the
placement app starts (``PlacementConfig.ready``), from the settings: in the
embedded default the ``local`` cloud stands in for all three providers.
Workflows only ever call ``get_cloud(provider)``.
"""

from __future__ import annotations

import dataclasses
import enum
import shlex
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

MANAGED_BY_TAG = "managed-by"
MANAGED_BY_VALUE = "compute-arbitrage"


class Market(enum.StrEnum):
    """How an instance is bought: spot (cheap, can be reclaimed or refused) or on demand (neither)."""

    SPOT = "spot"
    ON_DEMAND = "on_demand"


class InstanceState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    STOPPING = "stopping"
    TERMINATED = "terminated"
    FAILED = "failed"
    PREEMPTED = "preempted"  # the cloud reclaimed the spot capacity


@dataclass(frozen=True)
class InstanceRequest:
    """What provision-cloud-resources asks a cloud for.

    ``idempotency_token`` is derived from the workflow run and the offer, so a
    retried or resumed create finds the instance it already made (AWS
    ClientToken, GCP instance name / request id, Azure VM name, local state key).
    """

    idempotency_token: str
    region: str
    availability_zone: str
    instance_type: str
    # The spot bid; an on-demand create pays the list price and ignores it.
    max_price_per_hour: Decimal
    tags: dict[str, str]
    image_id: str = ""
    command: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    user_data: str = ""
    health_check_port: int = 8080
    market: Market = Market.SPOT


@dataclass(frozen=True)
class InstanceInfo:
    instance_id: str
    state: InstanceState
    region: str
    availability_zone: str = ""
    instance_type: str = ""
    public_ip: str = ""
    # Where the workload's health-check port is reachable, when the cloud maps
    # it elsewhere (the local cloud gives each instance its own loopback port).
    service_port: int | None = None
    tags: dict[str, str] = field(default_factory=dict)
    launched_at: datetime | None = None
    state_reason: str = ""
    # The cloud's still-running create operation, when creation is asynchronous
    # (a GCP zone operation name, an Azure continuation token): the workflow keeps
    # it and passes it back to ``get_instance_status`` from later tasks.
    operation: str = ""
    # Read from the cloud's own description where it has one (AWS ``InstanceLifecycle``, GCP
    # ``scheduling.provisioningModel``, Azure ``priority``); the default where it cannot tell yet.
    market: Market = Market.SPOT

    def address(self, health_check_port: int) -> str:
        """``host:port`` where the workload answers."""
        return f"{self.public_ip}:{self.service_port or health_check_port}"


@dataclass(frozen=True)
class InterruptionWarning:
    """The cloud announced it will reclaim a spot instance (e.g. AWS's two-minute warning)."""

    instance_id: str
    region: str
    deadline: datetime | None = None
    detail: dict[str, str] = field(default_factory=dict)


#: The log shipper the boot script runs the command through (read as a file: no import of ``agent``).
SHIP_SOURCE = Path(__file__).resolve().parents[2] / "agent" / "ship.py"
SHIP_HEREDOC_END = "ARBITRAGE_SHIP_PY"


def startup_script(request: InstanceRequest) -> str:
    """The shell script a cloud instance runs at boot: the workload's environment, then its command.

    AWS passes it as user data, GCP as the ``startup-script`` metadata item,
    Azure as custom data; an explicit ``request.user_data`` wins. When the image has
    ``python3`` the command runs under the log shipper (``agent/ship.py``, written to
    ``$ARBITRAGE_SHIP_DIR``, default ``/run``), which pushes its output to the workload's
    log; without it (or where the file cannot be written) the command runs as it is.
    """
    if request.user_data:
        return request.user_data
    lines = ["#!/bin/sh", "set -e"]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in sorted(request.env.items())]
    if request.command:
        command = " ".join(shlex.quote(part) for part in request.command)
        source = SHIP_SOURCE.read_text()
        if SHIP_HEREDOC_END in source.splitlines():
            raise ValueError(f"{SHIP_SOURCE} has a line {SHIP_HEREDOC_END!r}, which ends its heredoc")
        lines += [
            'ship="${ARBITRAGE_SHIP_DIR:-/run}/arbitrage-ship.py"',
            f"if command -v python3 >/dev/null 2>&1 && cat >\"$ship\" <<'{SHIP_HEREDOC_END}'",
            source.rstrip("\n"),
            SHIP_HEREDOC_END,
            "then",
            f'  exec python3 "$ship" -- {command}',
            "fi",
            "exec " + command,
        ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ObservedPrice:
    """One pool's price as a cloud reports it."""

    provider: str
    region: str
    availability_zone: str
    instance_type: str
    spot_price: Decimal
    observed_at: datetime
    on_demand_price: Decimal | None = None


@dataclass(frozen=True)
class ObservedPlacementScore:
    """How likely a cloud says a one-instance spot request in a pool is to succeed now: 1 (not likely) to 10."""

    provider: str
    region: str
    availability_zone: str
    instance_type: str
    score: int
    observed_at: datetime


# --- normalised errors ----------------------------------------------------------


class CloudError(Exception):
    """Base of every error a cloud adapter raises; ``message`` is the cloud's own words."""

    retryable = False

    def __init__(self, message: str, *, provider: str = "", code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.code = code


class CapacityError(CloudError):
    """No spot capacity in this pool now: try the next candidate."""


class QuotaError(CloudError):
    """An account quota stops this create: try the next candidate."""


class PriceTooLowError(CloudError):
    """The spot market price is above our max price: try the next candidate."""


class InstanceNotFound(CloudError):
    pass


class TransientCloudError(CloudError):
    """Throttling, 5xx, timeouts: retry the same call."""

    retryable = True


class PermanentCloudError(CloudError):
    """Bad image, bad credentials, invalid request: retrying will not help."""


#: Errors after which the workflow moves on to the next ranked offer.
NEXT_CANDIDATE_ERRORS = (CapacityError, QuotaError, PriceTooLowError)


# --- interfaces -----------------------------------------------------------------


class CloudAdapter(ABC):
    provider: str

    @abstractmethod
    def create_instance(self, request: InstanceRequest) -> InstanceInfo:
        """Create (or find, by ``request.idempotency_token``) one instance in ``request.market``.

        A spot create may be refused for want of capacity (``CapacityError``) or of price
        (``PriceTooLowError``); an on-demand one can still meet ``CapacityError`` when the
        cloud has none of that type left in the zone.
        """

    def create_spot_instance(self, request: InstanceRequest) -> InstanceInfo:
        """``create_instance`` in the spot market, whatever ``request.market`` says (for callers before markets)."""
        return self.create_instance(dataclasses.replace(request, market=Market.SPOT))

    @abstractmethod
    def get_instance_status(self, instance_id: str, region: str, *, operation: str = "") -> InstanceInfo:
        """Current state; raises ``InstanceNotFound`` if the cloud has no such instance.

        ``operation`` is the ``InstanceInfo.operation`` the create returned: while
        it runs the instance is PENDING; if it failed, its error is raised here,
        normalised (``CapacityError`` and the rest), so the workflow can move on
        to the next candidate. One status call per check: it never blocks.
        """

    #: Whether ``get_instance_statuses`` reads many instances in one call (then callers batch their reads).
    describes_in_batches: bool = False

    def get_instance_statuses(self, instance_ids: Sequence[str], region: str) -> dict[str, InstanceInfo]:
        """Current states of many instances of one region, in as few calls as the cloud allows.

        An id missing from the answer is an instance the cloud does not have. For instances whose
        create ``operation`` may still be running, ask ``get_instance_status`` instead. By default one
        call per instance; a cloud that describes many instances at once overrides this.
        """
        found = {}
        for instance_id in dict.fromkeys(instance_ids):
            try:
                found[instance_id] = self.get_instance_status(instance_id, region)
            except InstanceNotFound:
                continue
        return found

    @abstractmethod
    def terminate_instance(self, instance_id: str, region: str) -> None:
        """Terminate; an instance that is already gone is not an error."""

    @abstractmethod
    def list_managed_instances(self, region: str) -> list[InstanceInfo]:
        """Instances in ``region`` tagged ``managed-by: compute-arbitrage``."""

    def console_output(self, instance_id: str, region: str, *, offset: int = 0, limit: int = 1 << 20) -> bytes:
        """The instance's console output (its workload's stdout and stderr) from byte ``offset`` on.

        At most ``limit`` bytes; fewer (or none) when the instance has written no more yet.
        Still readable for a while after the instance ended, so its last lines can be kept.
        Raises ``InstanceNotFound`` when the cloud has no such instance (nor its output).

        The clouds' own channels (EC2 GetConsoleOutput, GCP getSerialPortOutput, Azure boot
        diagnostics) are not read yet: a cloud that does not override this returns nothing.
        """
        return b""

    def interruption_warnings(self, region: str) -> list[InterruptionWarning]:
        """Spot interruption warnings the cloud has sent for ``region`` since the last call.

        Clouds without a warning channel return nothing; their interruptions are
        seen as PREEMPTED status by the health sweep and reconciliation.
        """
        return []


class PriceSource(ABC):
    provider: str

    @abstractmethod
    def fetch_spot_prices(self, *, regions: list[str]) -> list[ObservedPrice]:
        """Current spot prices for the given regions; raises ``CloudError`` on failure."""

    def fetch_placement_scores(self, *, regions: list[str], instance_types: list[str]) -> list[ObservedPlacementScore]:
        """The cloud's own score of each pool's spot capacity, where it publishes one (AWS); none by default."""
        return []


# --- registry -------------------------------------------------------------------

_clouds: dict[str, CloudAdapter] = {}
_price_sources: dict[str, PriceSource] = {}
_cloud_factories: dict[str, Callable[[str], CloudAdapter]] = {}
_Registered = TypeVar("_Registered", CloudAdapter, PriceSource)


class CloudNotConfigured(LookupError):
    pass


def register_cloud_factory(backend: str, factory: Callable[[str], CloudAdapter]) -> None:
    """Make a backend (``local``, ``aws``, ...) available to ``CLOUD_BACKENDS``."""
    _cloud_factories[backend] = factory


def cloud_factories() -> dict[str, Callable[[str], CloudAdapter]]:
    return dict(_cloud_factories)


def register_cloud(provider: str, adapter: CloudAdapter) -> None:
    _clouds[provider] = adapter


def register_price_source(provider: str, source: PriceSource) -> None:
    _price_sources[provider] = source


def _registered(registered: dict[str, _Registered], provider: str, *, what: str) -> _Registered:
    try:
        return registered[provider]
    except KeyError:
        raise CloudNotConfigured(f"no {what} is configured for provider {provider!r}") from None


def get_cloud(provider: str) -> CloudAdapter:
    return _registered(_clouds, provider, what="cloud adapter")


def get_price_source(provider: str) -> PriceSource:
    return _registered(_price_sources, provider, what="price source")


def price_sources() -> dict[str, PriceSource]:
    return dict(_price_sources)
