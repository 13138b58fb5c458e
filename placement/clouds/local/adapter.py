"""The ``local`` cloud: every instance is a real process on this machine (DESIGN.md §8).

It stands in for AWS, GCP and Azure so every path of the system (provisioning,
health checks, routing, preemption, reconciliation) runs on one machine.
Instances run the sample workload agent (``python -m workloads.agent``) or the
request's ``command``, each on its own loopback port.

Everything lives on disk under ``VAR_DIR/local-cloud`` so that any process (web,
Celery workers, tests, a restarted worker) sees the same cloud:

* ``instances/<id>.json``: one record per instance, written atomically. The id
  is derived from the provider and the idempotency token, so the record *is*
  the token→instance mapping, and a retried create finds it.
* ``run/<id>/``: the instance's working directory, ``output.log`` (its stdout
  and stderr), ``launch.json`` (its process ids) and ``exit.json`` (its exit
  status, once it has exited).
* ``faults.json``: injected faults, shared by every process (``faults_set``).
* ``lock``: an ``flock`` serialising creates and state changes across processes.

Process layout: a short-lived *launcher* (a child of the caller, reaped at once)
forks a *supervisor* in its own session, which starts the workload and waits
for it. The workload therefore survives the Celery worker that created it being
killed, never becomes the worker's zombie, and its exit status is recorded by
its real parent. Liveness checks compare the start time in ``/proc/<pid>/stat``
so a reused PID is never mistaken for the instance.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import itertools
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings

from placement.clouds import base
from placement.clouds.base import InstanceInfo, InstanceRequest, InstanceState
from placement.clouds.local_launcher import HAVE_PROC as _HAVE_PROC
from placement.clouds.local_launcher import proc_stat as _proc_stat
from placement.clouds.local_launcher import write_json as _write_json

logger = logging.getLogger(__name__)

_INSTANCE_ID = re.compile(r"^local-[0-9a-f]{12}$")
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
# Variables of this process an instance inherits; everything else (secrets,
# DATABASE_URL, ...) stays out, as it would on a real VM.
_INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")
_LAUNCH_TIMEOUT_SECONDS = 30.0
_LAUNCHER_CODE = "from placement.clouds.local_launcher import launcher_main; launcher_main()"
_KILL_WAIT_SECONDS = 5.0
_POLL_SECONDS = 0.05
_pause = threading.Event()  # never set: ``_pause.wait(t)`` is an interruptible sleep


# --- files and the cross-process lock --------------------------------------------------------------------


def _root() -> Path:
    root = Path(settings.VAR_DIR) / "local-cloud"
    (root / "instances").mkdir(parents=True, exist_ok=True)
    (root / "run").mkdir(exist_ok=True)
    return root


def _record_path(instance_id: str) -> Path:
    return _root() / "instances" / f"{instance_id}.json"


def _run_dir(instance_id: str) -> Path:
    return _root() / "run" / instance_id


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """Hold the machine-wide lock. Not reentrant: never nest it."""
    with open(_root() / "lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


@contextlib.contextmanager
def _token_locked(provider: str, token: str) -> Iterator[None]:
    """Hold the lock of one idempotency token (per provider), across processes."""
    locks = _root() / "locks"
    locks.mkdir(exist_ok=True)
    with open(locks / f"{next(_candidate_ids(provider, token))}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _load(instance_id: str) -> dict[str, Any] | None:
    # The id becomes a path: accept only ids this cloud makes.
    if not _INSTANCE_ID.match(instance_id):
        return None
    return _read_json(_record_path(instance_id))


def _save(record: dict[str, Any]) -> None:
    _write_json(_record_path(record["instance_id"]), record)


def _records() -> list[dict[str, Any]]:
    records = []
    for path in (_root() / "instances").glob("local-*.json"):
        record = _read_json(path)
        if record is not None:
            records.append(record)
    return sorted(records, key=lambda record: record["launched_at"])


# --- processes -------------------------------------------------------------------------------------------


def _alive(pid: int | None, start_time: int | None) -> bool:
    """Whether this very process (not a zombie, not a later one with the same PID) still runs."""
    if not pid:
        return False
    if not _HAVE_PROC:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    stat = _proc_stat(pid)
    if stat is None:
        return False
    state, started = stat
    return state not in {"Z", "X", "x"} and (start_time is None or started == start_time)


def _agent_alive(record: Mapping[str, Any]) -> bool:
    return _alive(record.get("pid"), record.get("pid_start"))


def _supervisor_alive(record: Mapping[str, Any]) -> bool:
    return _alive(record.get("supervisor_pid"), record.get("supervisor_start"))


def _running(record: Mapping[str, Any]) -> bool:
    """The workload runs, or has just exited and its supervisor is still recording how."""
    if _agent_alive(record):
        return True
    return _supervisor_alive(record) and not (_run_dir(record["instance_id"]) / "exit.json").exists()


def _launch(instance_id: str, argv: list[str], env: dict[str, str], port: int) -> dict[str, Any]:
    """Start a detached instance process; its ``launch.json`` (process ids, port, start time)."""
    run_dir = _run_dir(instance_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("launch.json", "exit.json"):
        (run_dir / stale).unlink(missing_ok=True)
    spec = {"instance_id": instance_id, "run_dir": str(run_dir), "argv": argv, "env": env, "port": port}
    # -S: the launcher needs only the standard library, and starts several times faster without site.
    launcher = [
        sys.executable,
        "-S",
        "-c",
        "from placement.clouds.local_launcher import launcher_main; launcher_main()",
    ]
    try:
        done = subprocess.run(
            launcher,
            input=json.dumps(spec),
            capture_output=True,
            text=True,
            cwd=settings.BASE_DIR,
            timeout=_LAUNCH_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise base.TransientCloudError(f"local cloud: launching {instance_id} timed out") from exc
    launch = _read_json(run_dir / "launch.json")
    if done.returncode != 0 or launch is None:
        detail = (done.stderr.strip().splitlines() or [f"see {run_dir / 'output.log'}"])[-1]
        raise base.TransientCloudError(
            f"local cloud: launching {instance_id} failed (status {done.returncode}): {detail}"
        )
    return launch


def _signal_group(record: Mapping[str, Any], signum: int) -> None:
    # The supervisor leads the instance's process group. Its id cannot have been
    # reused while a member is alive, so only signal a group we know still exists.
    if not (_agent_alive(record) or _supervisor_alive(record)):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(record["supervisor_pid"], signum)
    if signum == signal.SIGKILL and _agent_alive(record):  # it may have left the group
        with contextlib.suppress(ProcessLookupError):
            os.kill(record["pid"], signum)


def _wait_gone(record: Mapping[str, Any], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _agent_alive(record) or _supervisor_alive(record):
        if time.monotonic() >= deadline:
            return False
        _pause.wait(_POLL_SECONDS)
    return True


def _stop_processes(record: Mapping[str, Any]) -> None:
    """SIGTERM the instance, SIGKILL it if it outlives the grace period."""
    if not record.get("supervisor_pid"):
        return
    _signal_group(record, signal.SIGTERM)
    if not _wait_gone(record, float(settings.LOCAL_CLOUD_STOP_GRACE_SECONDS)):
        logger.warning("local cloud: %s ignored SIGTERM; killing it", record["instance_id"])
        _signal_group(record, signal.SIGKILL)
        _wait_gone(record, _KILL_WAIT_SECONDS)


# --- states ----------------------------------------------------------------------------------------------


def _exit_reason(instance_id: str) -> tuple[str, float | None]:
    """How the workload ended, in words, and when."""
    exit_info = _read_json(_run_dir(instance_id) / "exit.json")
    if exit_info is None:
        return "process exited (status unknown)", None
    status = exit_info["status"]
    if status < 0:
        return f"process was killed by {signal.Signals(-status).name}", exit_info["exited_at"]
    return f"process exited with status {status}", exit_info["exited_at"]


def _observe(record: Mapping[str, Any]) -> tuple[InstanceState, str]:
    """The state a caller sees: the stored state, or for a launched instance what its process says."""
    stored = InstanceState(record["state"])
    reason = record.get("state_reason", "")
    if stored in {InstanceState.TERMINATED, InstanceState.FAILED, InstanceState.PREEMPTED}:
        return stored, reason
    if record.get("reclaim_at") and time.time() >= record["reclaim_at"] and stored is not InstanceState.STOPPING:
        return InstanceState.PREEMPTED, "spot interruption (after notice)"
    running = _running(record)
    if stored is InstanceState.STOPPING:
        return (InstanceState.STOPPING if running else InstanceState.TERMINATED), reason
    booted_at = record["launched_at"] + record["boot_delay_seconds"]
    if running:
        return (InstanceState.RUNNING if time.time() >= booted_at else InstanceState.PENDING), ""
    reason, exited_at = _exit_reason(record["instance_id"])
    if (exited_at if exited_at is not None else time.time()) < booted_at:
        reason += " during boot"
    return InstanceState.FAILED, reason


def _info(record: Mapping[str, Any]) -> InstanceInfo:
    state, reason = _observe(record)
    return InstanceInfo(
        instance_id=record["instance_id"],
        state=state,
        region=record["region"],
        availability_zone=record["availability_zone"],
        instance_type=record["instance_type"],
        public_ip="127.0.0.1",
        service_port=record["port"],
        tags=dict(record["tags"]),
        launched_at=datetime.fromtimestamp(record["launched_at"], tz=UTC),
        state_reason=reason,
    )


def _settle(record: dict[str, Any]) -> dict[str, Any]:
    """Store a failure once it is seen, so it reads the same later (a transition the process cannot undo)."""
    state, reason = _observe(record)
    if state not in {InstanceState.FAILED, InstanceState.PREEMPTED} or record["state"] == state:
        return record
    with _locked():
        current = _load(record["instance_id"])
        if current is None or current["state"] != InstanceState.PENDING:
            return current or record
        current.update(state=state.value, state_reason=reason)
        _save(current)
    if state is InstanceState.PREEMPTED:
        _stop_processes(current)  # the notice's time has come: the cloud takes the instance back
    return current


# --- faults ----------------------------------------------------------------------------------------------


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
    with _locked():
        _write_json(_root() / "faults.json", config)


def faults_clear() -> None:
    """No injected faults."""
    with _locked():
        (_root() / "faults.json").unlink(missing_ok=True)


def faults_get() -> dict[str, Any]:
    """The injected faults now in force (defaults when none)."""
    return {**_FAULT_DEFAULTS, **(_read_json(_root() / "faults.json") or {})}


def _apply_create_faults(provider: str, request: InstanceRequest, faults: dict[str, Any]) -> None:
    """Raise the injected error for this create, if any. Call with the lock held."""
    if faults["fail_next_creates"] > 0:
        faults["fail_next_creates"] -= 1
        _write_json(_root() / "faults.json", faults)
        error = _CREATE_ERRORS[faults["create_error"]]
        raise error(f"injected {faults['create_error']} failure of create (local cloud)", provider=provider)
    pool = {
        "provider": provider,
        "region": request.region,
        "availability_zone": request.availability_zone,
        "instance_type": request.instance_type,
    }
    for entry in faults["no_capacity_pools"]:
        if all(pool[key] == value for key, value in entry.items()):
            code, message = _NO_CAPACITY.get(provider, _NO_CAPACITY["aws"])
            raise base.CapacityError(f"{code}: {message.format(**pool)}", provider=provider, code=code)


# --- the adapter -----------------------------------------------------------------------------------------


def _candidate_ids(provider: str, token: str) -> Iterator[str]:
    """Stable ids for a token; later ones only in the (unlikely) event of a hash collision."""
    for salt in itertools.count():
        digest = hashlib.sha256(f"{provider}\n{token}\n{salt}".encode()).hexdigest()
        yield f"local-{digest[:12]}"


def _slot(provider: str, token: str) -> tuple[str, dict[str, Any] | None]:
    """The instance id for this token, and its record if it was already created."""
    for instance_id in _candidate_ids(provider, token):
        record = _load(instance_id)
        if record is None or (record["provider"], record["idempotency_token"]) == (provider, token):
            return instance_id, record
    raise AssertionError("unreachable: the candidate ids never end")


def _reserve_port() -> int:
    """A free loopback port, reserved (a file under ports/) until its instance is recorded. Call with the lock held."""
    reserved_dir = _root() / "ports"
    reserved_dir.mkdir(exist_ok=True)
    port = _free_port(reserved={int(path.name) for path in reserved_dir.iterdir() if path.name.isdigit()})
    (reserved_dir / str(port)).touch()
    return port


def _free_port(reserved: set[int] = frozenset()) -> int:
    """A loopback port free now and not promised to another live instance. Call with the lock held."""
    promised = reserved | {
        record["port"]
        for record in _records()
        if record["state"] in {InstanceState.PENDING, InstanceState.STOPPING} and _running(record)
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

    def create_spot_instance(self, request: InstanceRequest) -> InstanceInfo:
        if not request.idempotency_token:
            raise base.PermanentCloudError("an idempotency token is required", provider=self.provider)
        # Creates of one token take turns; creates of different tokens launch in parallel,
        # holding the machine-wide lock only to pick their id and port.
        with _token_locked(self.provider, request.idempotency_token):
            with _locked():
                instance_id, record = _slot(self.provider, request.idempotency_token)
                if record is not None:
                    return _info(record)
                faults = faults_get()
                _apply_create_faults(self.provider, request, faults)
                port = _reserve_port()
            try:
                record = self._start(instance_id, request, faults, port)
            finally:
                (_root() / "ports" / str(port)).unlink(missing_ok=True)
        logger.info("local cloud: %s instance %s on port %s", self.provider, instance_id, record["port"])
        if faults["create_delay_seconds"]:
            threading.Event().wait(faults["create_delay_seconds"])  # the injected slow answer
        # Like RunInstances: a new instance is reported pending, whatever has happened since.
        return dataclasses.replace(_info(record), state=InstanceState.PENDING, state_reason="")

    def _start(self, instance_id: str, request: InstanceRequest, faults: dict[str, Any], port: int) -> dict[str, Any]:
        """Launch the instance and record it. Call with the token's lock held."""
        argv = list(request.command) or [sys.executable, "-m", "workloads.agent"]
        launch = _read_json(_run_dir(instance_id) / "launch.json")
        if launch is None or not _alive(launch["pid"], launch["pid_start"]):
            launch = _launch(instance_id, argv, self._environment(instance_id, request, port, faults), port)
        # else: a create that launched this instance died before recording it; adopt the process.
        record = {
            "instance_id": instance_id,
            "provider": self.provider,
            "idempotency_token": request.idempotency_token,
            "region": request.region,
            "availability_zone": request.availability_zone,
            "instance_type": request.instance_type,
            "max_price_per_hour": str(request.max_price_per_hour),
            "tags": dict(request.tags),
            "command": argv,
            "port": launch["port"],
            "launched_at": launch["started_at"],
            "boot_delay_seconds": settings.LOCAL_CLOUD_BOOT_DELAY_MS / 1000,
            "state": InstanceState.PENDING.value,
            "state_reason": "",
            "pid": launch["pid"],
            "pid_start": launch["pid_start"],
            "supervisor_pid": launch["supervisor_pid"],
            "supervisor_start": launch["supervisor_start"],
        }
        _save(record)
        return record

    def _environment(
        self, instance_id: str, request: InstanceRequest, port: int, faults: dict[str, Any]
    ) -> dict[str, str]:
        env = {name: os.environ[name] for name in _INHERITED_ENV if name in os.environ}
        env.update(PYTHONPATH=str(settings.BASE_DIR), PYTHONUNBUFFERED="1")
        env.update(request.env)
        env.update(PORT=str(port), INSTANCE_ID=instance_id, PROVIDER=self.provider)
        env["INTERRUPTION_NOTICE_FILE"] = str(_notice_path(instance_id))
        if "workload-id" in request.tags:
            env["WORKLOAD_ID"] = request.tags["workload-id"]
        if faults["never_healthy"]:
            env["AGENT_NEVER_HEALTHY"] = "1"
        if faults["die_after_seconds"] is not None:
            env["AGENT_DIE_AFTER_SECONDS"] = str(faults["die_after_seconds"])
        return env

    def _own(self, instance_id: str, region: str) -> dict[str, Any] | None:
        """The record, if it is one of this provider's instances in ``region`` (as a real cloud scopes ids)."""
        record = _load(instance_id)
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
        return _info(_settle(record))

    def terminate_instance(self, instance_id: str, region: str) -> None:
        if self._own(instance_id, region) is None:
            logger.info("local cloud: terminate of unknown instance %s in %s %s", instance_id, self.provider, region)
            return
        _terminate(instance_id)

    def list_managed_instances(self, region: str) -> list[InstanceInfo]:
        infos = []
        for record in _records():
            if record["provider"] != self.provider or record["region"] != region:
                continue
            if record["tags"].get(base.MANAGED_BY_TAG) != base.MANAGED_BY_VALUE:
                continue
            info = _info(record)
            if info.state is not InstanceState.TERMINATED:
                infos.append(info)
        return infos


def _terminate(instance_id: str) -> None:
    """Stop the processes and record TERMINATED (STOPPING meanwhile); safe to repeat."""
    with _locked():
        record = _load(instance_id)
        if record is None:
            return
        if record["state"] != InstanceState.TERMINATED:
            state, reason = _observe(record)
            final_reason = "terminated by request"
            if state in {InstanceState.FAILED, InstanceState.PREEMPTED}:
                final_reason += f" (was {state}: {reason})"
            record.update(state=InstanceState.STOPPING.value, state_reason=final_reason)
            _save(record)
    _stop_processes(record)  # outside the lock: this may take the grace period
    with _locked():
        record = _load(instance_id) or record
        record["state"] = InstanceState.TERMINATED.value
        _save(record)


base.register_cloud_factory("local", LocalCloud)


# --- for tests, the admin and management commands ----------------------------------------------------------


def interrupt(instance_id: str) -> None:
    """Reclaim a spot instance as the cloud would: record PREEMPTED, then stop its process.

    An instance that is not pending or running is left as it is; an unknown id raises ``InstanceNotFound``.
    """
    with _locked():
        record = _load(instance_id)
        if record is None:
            raise base.InstanceNotFound(f"no local instance {instance_id!r}", provider="local")
        if _observe(record)[0] not in {InstanceState.PENDING, InstanceState.RUNNING}:
            return
        record.update(state=InstanceState.PREEMPTED.value, state_reason="spot interruption")
        _save(record)
    _stop_processes(record)


def interruption_notice(instance_id: str, *, grace_seconds: float) -> datetime:
    """Give a spot instance its interruption notice, as the clouds' metadata endpoints do.

    The instance's agent finds the notice in the file named by its
    ``INTERRUPTION_NOTICE_FILE`` (the local stand-in for AWS's
    ``spot/instance-action``, GCP's ``preempted`` and Azure's scheduled events),
    with the time it will be reclaimed; from then on the instance reads as
    PREEMPTED and its processes are stopped. Returns that time.
    """
    with _locked():
        record = _load(instance_id)
        if record is None:
            raise base.InstanceNotFound(f"no local instance {instance_id!r}", provider="local")
        deadline = time.time() + grace_seconds
        record["reclaim_at"] = deadline
        _save(record)
    reclaim_at = datetime.fromtimestamp(deadline, tz=UTC)
    _write_json(_notice_path(instance_id), {"action": "terminate", "time": reclaim_at.isoformat()})
    return reclaim_at


def _notice_path(instance_id: str) -> Path:
    return _run_dir(instance_id) / "interruption-notice.json"


def instances_all() -> list[InstanceInfo]:
    """Every instance ever recorded, of every provider and in every state, oldest first."""
    return [_info(record) for record in _records()]


def process_alive(instance_id: str) -> bool:
    """Whether the instance's workload process runs now."""
    record = _load(instance_id)
    return record is not None and _agent_alive(record)


def instance_pid(instance_id: str) -> int | None:
    """The workload's process id (None for an unknown instance or one whose command could not start)."""
    record = _load(instance_id)
    return record.get("pid") if record else None


def instance_log_path(instance_id: str) -> Path:
    """The file collecting the instance's stdout and stderr."""
    return _run_dir(instance_id) / "output.log"


def terminate_all() -> int:
    """Terminate every instance still running or not yet marked terminated; how many there were."""
    count = 0
    for record in _records():
        if record["state"] != InstanceState.TERMINATED or _agent_alive(record) or _supervisor_alive(record):
            _terminate(record["instance_id"])
            count += 1
    return count
