"""``LocalCloud``, the local cloud's ``CloudAdapter``, and what it offers tests, the admin and commands.

One ``LocalCloud`` per provider it stands in for; all of them share one state directory
(``store``). A create takes the idempotency token's lock, picks the instance's id and a
free loopback port under the machine-wide lock, then launches the instance
(``processes``) unless an injected fault says otherwise (``faults``).

Where an instance runs is chosen at its create by ``LOCAL_CLOUD_HOST_MODE``: a process of its
own (``process``), or an instance of the one fleet host (``fleet``: ``fleet_client``, on an
address of its own in 127.0.0.0/8 and the request's health-check port). Its record says which
(a fleet instance's names its host, ``host_id``), and every later call follows the record.

Markets, as the real clouds have them: the record keeps the request's market. A spot
instance can be refused for capacity (``no_capacity_pools``), interrupted (``interrupt``)
and given an interruption notice (``interruption_notice``). An on-demand one is never
refused for capacity, and both of those raise ``InstanceNotInterruptible`` for it,
rather than silently doing nothing, so a test or an operator expecting a reclaim learns at
once that none will happen.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings

# By module path, not "from placement.clouds.local import ...": the package's __init__ imports this module.
import placement.clouds.local.fleet_client as fleet_client
import placement.clouds.local.processes as processes
import placement.clouds.local.store as store
from placement.clouds import base
from placement.clouds.base import InstanceInfo, InstanceRequest, InstanceState, Market
from placement.clouds.local.faults import apply_create_faults, capacity_refusal, faults_get
from placement.clouds.local.launcher import write_json
from placement.clouds.local.sandbox import sandbox_argv, sandbox_prepare, sandbox_uid
from placement.clouds.local.trace import spot_available, traced_zone

logger = logging.getLogger("placement.clouds.local")

_FINAL_STATES = {InstanceState.TERMINATED, InstanceState.FAILED, InstanceState.PREEMPTED}


class CommandsDisabled(base.PermanentCloudError):
    """A request carried a custom command and the operator has not enabled them on the local cloud."""


class FleetCommandsUnsupported(base.PermanentCloudError):
    """A request carried a custom command and the local cloud runs its instances on the fleet host."""


class InstanceNotInterruptible(base.CloudError):
    """An on-demand instance was asked to be interrupted: only spot capacity is ever reclaimed."""


def _market(record: Mapping[str, Any]) -> Market:
    # Records written before markets existed are all spot instances.
    return Market(record.get("market", Market.SPOT))


# --- states ----------------------------------------------------------------------------------------------


def _exit_reason(instance_id: str) -> tuple[str, float | None]:
    """How the workload ended, in words, and when."""
    exit_info = store.read_json(store.run_dir(instance_id) / "exit.json")
    if exit_info is None:
        return "process exited (status unknown)", None
    status = exit_info["status"]
    if status < 0:
        return f"process was killed by {signal.Signals(-status).name}", exit_info["exited_at"]
    return f"process exited with status {status}", exit_info["exited_at"]


def _hosted(record: Mapping[str, Any]) -> bool:
    """Whether the instance runs on the fleet host (rather than as a process of its own)."""
    return bool(record.get("host_id"))


def _view_for(records: list[dict[str, Any]]) -> fleet_client.HostView | None:
    """One question to the fleet host about every fleet instance among ``records`` still to be observed."""
    ids = [record["instance_id"] for record in records if _hosted(record) and record["state"] not in _FINAL_STATES]
    return fleet_client.host_view(ids) if ids else None


def _observe(record: Mapping[str, Any], view: fleet_client.HostView | None = None) -> tuple[InstanceState, str]:
    """The state a caller sees: the stored state, or for a launched instance what its process (or host) says."""
    stored = InstanceState(record["state"])
    reason = record.get("state_reason", "")
    if stored in _FINAL_STATES:
        return stored, reason
    if record.get("reclaim_at") and time.time() >= record["reclaim_at"] and stored is not InstanceState.STOPPING:
        return InstanceState.PREEMPTED, "spot interruption (after notice)"
    if stored is not InstanceState.STOPPING and _trace_reclaims(record):
        return InstanceState.PREEMPTED, f"spot interruption (no capacity in {record['availability_zone']} in the trace)"
    if _hosted(record):
        return _observe_hosted(record, stored, reason, view or fleet_client.host_view([record["instance_id"]]))
    running = processes.running(record)
    if stored is InstanceState.STOPPING:
        return (InstanceState.STOPPING if running else InstanceState.TERMINATED), reason
    booted_at = record["launched_at"] + record["boot_delay_seconds"]
    if running:
        return (InstanceState.RUNNING if time.time() >= booted_at else InstanceState.PENDING), ""
    reason, exited_at = _exit_reason(record["instance_id"])
    if (exited_at if exited_at is not None else time.time()) < booted_at:
        reason += " during boot"
    return InstanceState.FAILED, reason


def _observe_hosted(
    record: Mapping[str, Any], stored: InstanceState, reason: str, view: fleet_client.HostView
) -> tuple[InstanceState, str]:
    running = view.runs(record)
    if stored is InstanceState.STOPPING:
        return (InstanceState.STOPPING if running else InstanceState.TERMINATED), reason
    booted_at = record["launched_at"] + record["boot_delay_seconds"]
    if running:
        return (InstanceState.RUNNING if time.time() >= booted_at else InstanceState.PENDING), ""
    if view.host_gone(record):
        return InstanceState.TERMINATED, "the fleet host that ran it stopped, and its instances with it"
    ending = view.ending(record)
    if ending is None:
        return InstanceState.FAILED, "agent stopped (status unknown)"
    reason = f"agent exited with status {ending['status']}"
    return InstanceState.FAILED, reason + (" during boot" if ending["ended_at"] < booted_at else "")


def _stop(record: Mapping[str, Any]) -> None:
    """Stop the instance, wherever it runs."""
    if _hosted(record):
        fleet_client.instance_stop(record)
    else:
        processes.stop(record)


def _trace_reclaims(record: Mapping[str, Any]) -> bool:
    """A spot instance in a pool that follows a trace, whose zone the trace now says has no capacity."""
    if _market(record) is not Market.SPOT:
        return False
    zone = traced_zone(record["provider"], record["availability_zone"], record["instance_type"])
    return zone is not None and not spot_available(zone)


def _info(record: Mapping[str, Any], view: fleet_client.HostView | None = None) -> InstanceInfo:
    state, reason = _observe(record, view)
    return InstanceInfo(
        instance_id=record["instance_id"],
        state=state,
        region=record["region"],
        availability_zone=record["availability_zone"],
        instance_type=record["instance_type"],
        public_ip=record.get("address", "127.0.0.1"),
        service_port=record["port"],
        tags=dict(record["tags"]),
        launched_at=datetime.fromtimestamp(record["launched_at"], tz=UTC),
        state_reason=reason,
        market=_market(record),
    )


def _settle(record: dict[str, Any], view: fleet_client.HostView | None = None) -> dict[str, Any]:
    """Store an end once it is seen, so it reads the same later (a transition the process cannot undo).

    A process-mode instance ends here failed or preempted; a fleet instance also terminated, when its host is gone.
    """
    state, reason = _observe(record, view)
    if state not in _FINAL_STATES or record["state"] == state:
        return record
    with store.locked():
        current = store.load(record["instance_id"])
        if current is None or current["state"] != InstanceState.PENDING:
            return current or record
        current.update(state=state.value, state_reason=reason)
        store.save(current)
    if state is InstanceState.PREEMPTED:
        _stop(current)  # the notice's time has come: the cloud takes the instance back
    return current


# --- the adapter -----------------------------------------------------------------------------------------


def _slot(provider: str, token: str) -> tuple[str, dict[str, Any] | None]:
    """The instance id for this token, and its record if it was already created."""
    for instance_id in store.candidate_ids(provider, token):
        record = store.load(instance_id)
        if record is None or (record["provider"], record["idempotency_token"]) == (provider, token):
            return instance_id, record
    raise AssertionError("unreachable: the candidate ids never end")


def _reserve_port() -> int:
    """A free loopback port, reserved (a file under ports/) until its instance is recorded. Call with the lock held."""
    reserved_dir = store.root_dir() / "ports"
    reserved_dir.mkdir(exist_ok=True)
    port = _free_port(reserved={int(path.name) for path in reserved_dir.iterdir() if path.name.isdigit()})
    (reserved_dir / str(port)).touch()
    return port


def _free_port(reserved: set[int] = frozenset()) -> int:
    """A loopback port free now and not promised to another live instance. Call with the lock held."""
    promised = reserved | {
        record["port"]
        for record in store.all_records()
        if record["state"] in {InstanceState.PENDING, InstanceState.STOPPING} and processes.running(record)
    }
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port not in promised:
            return port
    raise base.TransientCloudError("local cloud: no free loopback port")


class LocalCloud(base.CloudAdapter):
    """One provider's cloud, simulated with local processes; all providers share the same state directory."""

    def __init__(self, provider: str) -> None:
        self.provider = provider

    def create_instance(self, request: InstanceRequest) -> InstanceInfo:
        if not request.idempotency_token:
            raise base.PermanentCloudError("an idempotency token is required", provider=self.provider)
        hosted = settings.LOCAL_CLOUD_HOST_MODE == "fleet"
        if request.command and hosted:
            raise FleetCommandsUnsupported(
                "local cloud: custom commands cannot run on the fleet host (LOCAL_CLOUD_HOST_MODE=fleet), which "
                "runs only the sample agent; use LOCAL_CLOUD_HOST_MODE=process for a command",
                provider=self.provider,
                code="FleetCommandsUnsupported",
            )
        if request.command and not settings.LOCAL_CLOUD_ALLOW_COMMANDS:
            raise CommandsDisabled(
                "local cloud: custom commands are disabled (LOCAL_CLOUD_ALLOW_COMMANDS is off): instances here "
                "run on the service's own machine, so only the sample agent runs",
                provider=self.provider,
                code="CommandsDisabled",
            )
        # Creates of one token take turns; creates of different tokens launch in parallel,
        # holding the machine-wide lock only to pick their id and port.
        with store.token_locked(self.provider, request.idempotency_token):
            with store.locked():
                instance_id, record = _slot(self.provider, request.idempotency_token)
                if record is not None:
                    return _info(record)
                faults = faults_get()
                apply_create_faults(self.provider, request, faults)
                zone = traced_zone(self.provider, request.availability_zone, request.instance_type)
                if request.market is Market.SPOT and zone is not None and not spot_available(zone):
                    raise capacity_refusal(self.provider, request)  # the trace has no capacity there now
                port = None if hosted else _reserve_port()
            if port is None:
                record = self._start_hosted(instance_id, request, faults)
            else:
                try:
                    record = self._start(instance_id, request, faults, port)
                finally:
                    (store.root_dir() / "ports" / str(port)).unlink(missing_ok=True)
        logger.info(
            "local cloud: %s %s instance %s on %s:%s",
            self.provider,
            request.market,
            instance_id,
            record.get("address", "127.0.0.1"),
            record["port"],
        )
        if faults["create_delay_seconds"]:
            threading.Event().wait(faults["create_delay_seconds"])  # the injected slow answer
        # Like RunInstances: a new instance is reported pending, whatever has happened since.
        return dataclasses.replace(_info(record), state=InstanceState.PENDING, state_reason="")

    def _start(self, instance_id: str, request: InstanceRequest, faults: dict[str, Any], port: int) -> dict[str, Any]:
        """Launch the instance and record it. Call with the token's lock held."""
        argv = list(request.command) or [sys.executable, "-m", "agent"]
        launch = store.read_json(store.run_dir(instance_id) / "launch.json")
        if launch is None or not processes.alive(launch["pid"], launch["pid_start"]):
            env = self._environment(instance_id, request, port, faults)
            launched_argv = argv
            if settings.LOCAL_CLOUD_ALLOW_COMMANDS:
                directory, uid = store.run_dir(instance_id), sandbox_uid(port)
                sandbox_prepare(directory, uid=uid)
                launched_argv = sandbox_argv(argv, run_dir=directory, uid=uid)
                env.update(HOME=str(directory), TMPDIR="/tmp")
            launch = processes.launch(instance_id, launched_argv, env, port)
        # else: a create that launched this instance died before recording it; adopt the process.
        record = self._record(
            instance_id,
            request,
            command=argv,
            port=launch["port"],
            launched_at=launch["started_at"],
            pid=launch["pid"],
            pid_start=launch["pid_start"],
            supervisor_pid=launch["supervisor_pid"],
            supervisor_start=launch["supervisor_start"],
        )
        store.save(record)
        return record

    def _start_hosted(self, instance_id: str, request: InstanceRequest, faults: dict[str, Any]) -> dict[str, Any]:
        """Start the instance on the fleet host (starting the host if none runs) and record it.

        Call with the token's lock held. A create that started it and died before recording it is
        answered by the host with the running instance, which is adopted.
        """
        port = request.health_check_port  # every instance has an address of its own, so its port is the asked one
        started = fleet_client.instance_start(
            instance_id=instance_id,
            env=self._environment(instance_id, request, port, faults),
            port=port,
            boot_delay_seconds=settings.LOCAL_CLOUD_BOOT_DELAY_MS / 1000,
            log_path=instance_log_path(instance_id),
        )
        record = self._record(
            instance_id,
            request,
            command=[],
            port=started["port"],
            launched_at=started["started_at"],
            address=started["address"],
            host_id=started["host_id"],
            pid=None,
            pid_start=None,
            supervisor_pid=None,
            supervisor_start=None,
        )
        store.save(record)
        return record

    def _record(self, instance_id: str, request: InstanceRequest, **launched: Any) -> dict[str, Any]:
        return {
            "instance_id": instance_id,
            "provider": self.provider,
            "idempotency_token": request.idempotency_token,
            "region": request.region,
            "availability_zone": request.availability_zone,
            "instance_type": request.instance_type,
            "max_price_per_hour": str(request.max_price_per_hour),
            "market": request.market.value,
            "tags": dict(request.tags),
            "boot_delay_seconds": settings.LOCAL_CLOUD_BOOT_DELAY_MS / 1000,
            "state": InstanceState.PENDING.value,
            "state_reason": "",
            **launched,
        }

    def _environment(
        self, instance_id: str, request: InstanceRequest, port: int, faults: dict[str, Any]
    ) -> dict[str, str]:
        env = {name: os.environ[name] for name in processes.INHERITED_ENV if name in os.environ}
        env.update(PYTHONPATH=str(settings.BASE_DIR), PYTHONUNBUFFERED="1")
        env.update(request.env)
        env.update(PORT=str(port), INSTANCE_ID=instance_id, PROVIDER=self.provider)
        env["INTERRUPTION_NOTICE_FILE"] = str(store.notice_path(instance_id))
        if "workload-id" in request.tags:
            env["WORKLOAD_ID"] = request.tags["workload-id"]
        if faults["never_healthy"]:
            env["AGENT_NEVER_HEALTHY"] = "1"
        if faults["die_after_seconds"] is not None:
            env["AGENT_DIE_AFTER_SECONDS"] = str(faults["die_after_seconds"])
        return env

    def _own(self, instance_id: str, region: str) -> dict[str, Any] | None:
        """The record, if it is one of this provider's instances in ``region`` (as a real cloud scopes ids)."""
        record = store.load(instance_id)
        if record is None or record["provider"] != self.provider or record["region"] != region:
            return None
        return record

    def get_instance_status(self, instance_id: str, region: str, *, operation: str = "") -> InstanceInfo:
        # Local creates are synchronous: there is never an operation to follow.
        record = self._own(instance_id, region)
        if record is None:
            raise base.InstanceNotFound(
                f"InvalidInstanceID.NotFound: no instance {instance_id!r} in {self.provider} region {region!r}",
                provider=self.provider,
                code="InvalidInstanceID.NotFound",
            )
        view = _view_for([record])
        return _info(_settle(record, view), view)

    # Its statuses are local reads (and one call to the fleet host for all of them): cheap to read together.
    describes_in_batches = True

    def get_instance_statuses(self, instance_ids, region: str) -> dict[str, InstanceInfo]:
        records = [record for i in dict.fromkeys(instance_ids) if (record := self._own(i, region)) is not None]
        view = _view_for(records)
        return {record["instance_id"]: _info(_settle(record, view), view) for record in records}

    def terminate_instance(self, instance_id: str, region: str) -> None:
        if self._own(instance_id, region) is None:
            logger.info("local cloud: terminate of unknown instance %s in %s %s", instance_id, self.provider, region)
            return
        _terminate(instance_id)

    def console_output(self, instance_id: str, region: str, *, offset: int = 0, limit: int = 1 << 20) -> bytes:
        """What the instance wrote to its ``run/<id>/output.log`` (stdout and stderr), from ``offset`` on.

        The file stays after the instance ended, as a real cloud keeps the console output a while.
        """
        if self._own(instance_id, region) is None:
            raise base.InstanceNotFound(
                f"InvalidInstanceID.NotFound: no instance {instance_id!r} in {self.provider} region {region!r}",
                provider=self.provider,
                code="InvalidInstanceID.NotFound",
            )
        try:
            with open(instance_log_path(instance_id), "rb") as log:
                log.seek(max(offset, 0))
                return log.read(max(limit, 0))
        except FileNotFoundError:
            return b""  # the supervisor has not opened it yet

    def interruption_warnings(self, region: str) -> list[base.InterruptionWarning]:
        """Reclaim this provider's spot instances in ``region`` whose zone the trace says lost its capacity.

        The beat polls this, as it polls AWS's warning queue; each reclaimed instance is reported once.
        """
        warnings = []
        for record in store.all_records():
            if record["provider"] != self.provider or record["region"] != region:
                continue
            if record["state"] != InstanceState.PENDING or not _trace_reclaims(record):
                continue
            settled = _settle(dict(record))  # a reclaim reads from the record alone: the host is not asked
            if settled.get("state") == InstanceState.PREEMPTED:
                warnings.append(
                    base.InterruptionWarning(
                        instance_id=record["instance_id"],
                        region=region,
                        deadline=datetime.now(UTC),
                        detail={"reason": settled.get("state_reason", "")},
                    )
                )
        return warnings

    def list_managed_instances(self, region: str) -> list[InstanceInfo]:
        records = [
            record
            for record in store.all_records()
            if (record["provider"], record["region"]) == (self.provider, region)
            and record["tags"].get(base.MANAGED_BY_TAG) == base.MANAGED_BY_VALUE
        ]
        view = _view_for(records)
        infos = []
        for record in records:
            info = _info(record, view)
            if info.state is not InstanceState.TERMINATED:
                infos.append(info)
        return infos


def _terminate(instance_id: str, view: fleet_client.HostView | None = None) -> None:
    """Stop the processes (or the fleet host's instance) and record TERMINATED (STOPPING meanwhile); safe to repeat."""
    with store.locked():
        record = store.load(instance_id)
        if record is None:
            return
        if record["state"] != InstanceState.TERMINATED:
            state, reason = _observe(record, view)
            final_reason = "terminated by request"
            if state in {InstanceState.FAILED, InstanceState.PREEMPTED}:
                final_reason += f" (was {state}: {reason})"
            record.update(state=InstanceState.STOPPING.value, state_reason=final_reason)
            store.save(record)
    _stop(record)  # outside the lock: this may take the grace period
    with store.locked():
        record = store.load(instance_id) or record
        record["state"] = InstanceState.TERMINATED.value
        store.save(record)


base.register_cloud_factory("local", LocalCloud)


# --- for tests, the admin and management commands ----------------------------------------------------------


def _refuse_on_demand(record: Mapping[str, Any], *, action: str) -> None:
    if _market(record) is not Market.SPOT:
        raise InstanceNotInterruptible(
            f"local instance {record['instance_id']} is on demand: the cloud never reclaims it, so it cannot be "
            f"{action} (only spot instances can)",
            provider=record["provider"],
            code="NotSpotInstance",
        )


def interrupt(instance_id: str) -> None:
    """Reclaim a spot instance as the cloud would: record PREEMPTED, then stop its process.

    A spot instance that is not pending or running is left as it is; an unknown id raises
    ``InstanceNotFound``, an on-demand instance ``InstanceNotInterruptible`` (and is left running).
    """
    with store.locked():
        record = store.load(instance_id)
        if record is None:
            raise base.InstanceNotFound(f"no local instance {instance_id!r}", provider="local")
        _refuse_on_demand(record, action="interrupted")
        if _observe(record)[0] not in {InstanceState.PENDING, InstanceState.RUNNING}:
            return
        record.update(state=InstanceState.PREEMPTED.value, state_reason="spot interruption")
        store.save(record)
    _stop(record)


def interruption_notice(instance_id: str, *, grace_seconds: float) -> datetime:
    """Give a spot instance its interruption notice, as the clouds' metadata endpoints do.

    The instance's agent finds the notice in the file named by its
    ``INTERRUPTION_NOTICE_FILE`` (the local stand-in for AWS's
    ``spot/instance-action``, GCP's ``preempted`` and Azure's scheduled events),
    with the time it will be reclaimed; from then on the instance reads as
    PREEMPTED and its processes are stopped. Returns that time. An on-demand instance
    gets no notice (``InstanceNotInterruptible``): no cloud sends one for it.
    """
    with store.locked():
        record = store.load(instance_id)
        if record is None:
            raise base.InstanceNotFound(f"no local instance {instance_id!r}", provider="local")
        _refuse_on_demand(record, action="given an interruption notice")
        deadline = time.time() + grace_seconds
        record["reclaim_at"] = deadline
        store.save(record)
    reclaim_at = datetime.fromtimestamp(deadline, tz=UTC)
    # Readable by the instance, which may run as a user of its own (sandbox.py).
    write_json(store.notice_path(instance_id), {"action": "terminate", "time": reclaim_at.isoformat()}, mode=0o644)
    if _hosted(record):
        fleet_client.instance_notice(record)  # the host's agents are told, rather than polling a file each
    return reclaim_at


def instances_all() -> list[InstanceInfo]:
    """Every instance ever recorded, of every provider and in every state, oldest first."""
    records = store.all_records()
    view = _view_for(records)
    return [_info(record, view) for record in records]


def process_alive(instance_id: str) -> bool:
    """Whether the instance's workload runs now (its process, or on the fleet host)."""
    record = store.load(instance_id)
    if record is None:
        return False
    if _hosted(record):
        return fleet_client.host_view([instance_id]).runs(record)
    return processes.agent_alive(record)


def instance_pid(instance_id: str) -> int | None:
    """The workload's process id (None for an unknown instance, one whose command could not start, or a fleet one).

    A fleet instance has no process of its own: the host's (``fleet_client.host_pid``) runs them all.
    """
    record = store.load(instance_id)
    return record.get("pid") if record else None


def instance_log_path(instance_id: str) -> Path:
    """The file collecting the instance's stdout and stderr."""
    return store.run_dir(instance_id) / "output.log"


def terminate_all() -> int:
    """Terminate every instance still running or not yet marked terminated, and stop the fleet host; how many."""
    records = store.all_records()
    hosted_ids = [record["instance_id"] for record in records if _hosted(record)]
    view = fleet_client.host_view(hosted_ids) if hosted_ids else None
    count = 0
    for record in records:
        if _hosted(record):
            live = view is not None and view.runs(record)
        else:
            live = processes.agent_alive(record) or processes.supervisor_alive(record)
        if record["state"] != InstanceState.TERMINATED or live:
            _terminate(record["instance_id"], view)
            count += 1
    fleet_client.host_shutdown()
    return count
