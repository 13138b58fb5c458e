"""Faults injected into the local cloud (``faults.json``), for every process using the same ``VAR_DIR``.

Creates can fail (transiently or permanently, the next N of them), pools can have no
spot capacity (each cloud's own error), instances can never become healthy or die after
a while, and a create can answer late. Every fault applies to spot and on-demand creates
alike except the missing capacity: an on-demand create is never refused for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from placement.clouds import base
from placement.clouds.base import InstanceRequest
from placement.clouds.local.launcher import write_json
from placement.clouds.local.store import locked, read_json, root_dir

_POOL_KEYS = frozenset({"provider", "region", "availability_zone", "instance_type"})
_CREATE_ERRORS = {"transient": base.TransientCloudError, "permanent": base.PermanentCloudError}
_FAULT_DEFAULTS: dict[str, Any] = {
    "fail_next_creates": 0,
    "no_capacity_pools": [],
    "never_healthy": False,
    "die_after_seconds": None,
    "create_error": "transient",
    "create_delay_seconds": 0,
}
# What each cloud says when a pool has no spot capacity: (code, message).
_NO_CAPACITY = {
    "aws": (
        "InsufficientInstanceCapacity",
        "We currently do not have sufficient {instance_type} capacity in the Availability Zone you requested "
        "({availability_zone}). Our system will be working on provisioning additional capacity.",
    ),
    "gcp": (
        "ZONE_RESOURCE_POOL_EXHAUSTED",
        "The zone '{availability_zone}' does not have enough resources available to fulfill the request "
        "for {instance_type}.",
    ),
    "azure": (
        "AllocationFailed",
        "Allocation failed. We do not have sufficient capacity for the requested VM size {instance_type} "
        "in this region ({region}).",
    ),
}


def faults_set(
    *,
    fail_next_creates: int = 0,
    no_capacity_pools: Iterable[Mapping[str, str]] = (),
    never_healthy: bool = False,
    die_after_seconds: float | None = None,
    create_error: str = "transient",
    create_delay_seconds: float = 0,
) -> None:
    """Replace the injected faults, for every process using this ``VAR_DIR``.

    ``no_capacity_pools`` entries match on ``provider``, ``region``,
    ``availability_zone`` and ``instance_type``; a missing key matches anything.
    They refuse spot creates only: on-demand ones in the same pool still launch.
    ``fail_next_creates`` counts every create, of either market (an API failure, not capacity).
    ``never_healthy`` and ``die_after_seconds`` apply to instances created from now on.
    ``create_delay_seconds`` makes a create answer that much later, after the
    instance exists: a slow cloud API, or a caller that dies before the answer.
    """
    pools = [dict(pool) for pool in no_capacity_pools]
    for pool in pools:
        if not pool.keys() <= _POOL_KEYS or not all(isinstance(value, str) for value in pool.values()):
            raise ValueError(f"a no-capacity pool has string values for keys in {sorted(_POOL_KEYS)}, got {pool!r}")
    if fail_next_creates < 0:
        raise ValueError("fail_next_creates cannot be negative")
    if create_error not in _CREATE_ERRORS:
        raise ValueError(f"create_error is one of {sorted(_CREATE_ERRORS)}, got {create_error!r}")
    if die_after_seconds is not None and die_after_seconds < 0:
        raise ValueError("die_after_seconds cannot be negative")
    if create_delay_seconds < 0:
        raise ValueError("create_delay_seconds cannot be negative")
    config = {
        "fail_next_creates": fail_next_creates,
        "no_capacity_pools": pools,
        "never_healthy": never_healthy,
        "die_after_seconds": die_after_seconds,
        "create_error": create_error,
        "create_delay_seconds": create_delay_seconds,
    }
    with locked():
        write_json(root_dir() / "faults.json", config)


def faults_clear() -> None:
    """No injected faults."""
    with locked():
        (root_dir() / "faults.json").unlink(missing_ok=True)


def faults_get() -> dict[str, Any]:
    """The injected faults now in force (defaults when none)."""
    return {**_FAULT_DEFAULTS, **(read_json(root_dir() / "faults.json") or {})}


def apply_create_faults(provider: str, request: InstanceRequest, faults: dict[str, Any]) -> None:
    """Raise the injected error for this create, if any. Call with the lock held.

    The local cloud's on-demand capacity is unlimited, so a pool's missing spot capacity
    refuses spot creates only.
    """
    if faults["fail_next_creates"] > 0:
        faults["fail_next_creates"] -= 1
        write_json(root_dir() / "faults.json", faults)
        error = _CREATE_ERRORS[faults["create_error"]]
        raise error(f"injected {faults['create_error']} failure of create (local cloud)", provider=provider)
    if request.market is not base.Market.SPOT:
        return
    pool = {
        "provider": provider,
        "region": request.region,
        "availability_zone": request.availability_zone,
        "instance_type": request.instance_type,
    }
    for entry in faults["no_capacity_pools"]:
        if all(pool[key] == value for key, value in entry.items()):
            raise capacity_refusal(provider, request)


def capacity_refusal(provider: str, request: InstanceRequest) -> base.CapacityError:
    """The error the cloud answers a spot create with when the pool has no capacity, in its own words."""
    pool = {
        "provider": provider,
        "region": request.region,
        "availability_zone": request.availability_zone,
        "instance_type": request.instance_type,
    }
    code, message = _NO_CAPACITY.get(provider, _NO_CAPACITY["aws"])
    return base.CapacityError(f"{code}: {message.format(**pool)}", provider=provider, code=code)
