"""The adapter's side of the fleet host (``fleet_host``): starting it, and asking it to start and stop instances.

The host runs detached, like an instance's supervisor, so it outlives the worker that started
it. ``host_ensure`` starts one on demand, under a lock (``fleet/host.lock``) so that two workers
never start two; ``fleet/host.json`` keeps its pid, the pid's start time and the host's id.

Every instance record of a fleet instance names the host that runs it (``host_id``). An
instance runs while that very host runs it: once the host is gone (killed, the machine
restarted) its instances are gone with it, as the instances of a failed machine are, and a
later host does not know them.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

# By module path: "from placement.clouds.local import ..." would import the package, whose adapter imports this.
import placement.clouds.local.fleet_host as fleet_host
from placement.clouds import base
from placement.clouds.local.launcher import start_time, write_json
from placement.clouds.local.processes import INHERITED_ENV, alive
from placement.clouds.local.store import read_json, root_dir

logger = logging.getLogger("placement.clouds.local")

_HOST_SCRIPT = Path(fleet_host.__file__).resolve()
_START_TIMEOUT_SECONDS = 30.0
_ASK_TIMEOUT_SECONDS = 30.0
_SHUTDOWN_WAIT_SECONDS = 10.0
_pause = threading.Event()  # never set: ``_pause.wait(t)`` is an interruptible sleep


class HostUnavailable(base.TransientCloudError):
    """The fleet host runs but does not answer (busy, or its socket is broken): try again."""


def state_dir() -> Path:
    return root_dir() / "fleet"


@dataclass(frozen=True)
class HostView:
    """What the host said about some instances at one moment: which run, and how the others ended."""

    host_id: str | None  # None: no host runs
    running: frozenset[str] = frozenset()
    ended: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def runs(self, record: Mapping[str, Any]) -> bool:
        return not self.host_gone(record) and record["instance_id"] in self.running

    def host_gone(self, record: Mapping[str, Any]) -> bool:
        """The host that ran the instance is no longer the one running (or none runs)."""
        return self.host_id is None or record.get("host_id") != self.host_id

    def ending(self, record: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """How the instance ended on its own (``status``, ``ended_at``), if its host still knows."""
        return None if self.host_gone(record) else self.ended.get(record["instance_id"])


# --- asking the host -----------------------------------------------------------------------------------


def _ask(message: dict[str, Any], *, timeout: float = _ASK_TIMEOUT_SECONDS) -> dict[str, Any] | None:
    """The host's answer, or None when no host listens. ``HostUnavailable`` when one runs but does not answer."""
    try:
        return fleet_host.control_ask(fleet_host.control_path(state_dir()), message, timeout=timeout)
    except (OSError, ValueError) as error:  # no socket, refused, reset (a host dying), timed out, half an answer
        if _recorded_host_alive():
            raise HostUnavailable(f"local cloud: the fleet host did not answer ({error!r})", provider="local") from None
        return None


def _answered(answer: dict[str, Any]) -> dict[str, Any]:
    if not answer.get("ok"):
        error = base.PermanentCloudError if answer.get("permanent") else base.TransientCloudError
        raise error(f"local cloud: the fleet host refused: {answer.get('error')}", provider="local")
    return answer


def _recorded_host() -> dict[str, Any] | None:
    return read_json(state_dir() / "host.json")


def _recorded_host_alive() -> bool:
    recorded = _recorded_host()
    return recorded is not None and alive(recorded.get("pid"), recorded.get("pid_start"))


def host_pid() -> int | None:
    """The process id of the fleet host now running, if any."""
    recorded = _recorded_host()
    if recorded is None or not alive(recorded.get("pid"), recorded.get("pid_start")):
        return None
    return recorded["pid"]


@contextlib.contextmanager
def _start_lock() -> Iterator[None]:
    state_dir().mkdir(exist_ok=True)
    with open(state_dir() / "host.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def host_ensure() -> str:
    """The running host's id, after starting one if none runs."""
    answer = _ask({"op": "ping"})
    if answer is not None:
        return answer["host_id"]
    with _start_lock():
        answer = _ask({"op": "ping"})  # another worker may have started it meanwhile
        if answer is not None:
            return answer["host_id"]
        return _spawn()


def _spawn() -> str:
    """Start a detached host and record it. Call with the start lock held and no host running."""
    env = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
    env.update(PYTHONPATH=str(settings.BASE_DIR), PYTHONUNBUFFERED="1")
    directory = state_dir()
    # -P: the script's directory (this package's modules) stays off sys.path; the project root is on PYTHONPATH.
    command = [sys.executable, "-P", str(_HOST_SCRIPT), "--detach", str(directory)]
    try:
        done = subprocess.run(
            command,
            env=env,
            cwd=settings.BASE_DIR,
            capture_output=True,
            text=True,
            timeout=_START_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise base.TransientCloudError("local cloud: starting the fleet host timed out", provider="local") from exc
    words = done.stdout.split()
    if done.returncode != 0 or len(words) != 3 or words[0] != "ready":
        detail = (done.stderr.strip().splitlines() or [f"status {done.returncode}"])[-1]
        raise base.TransientCloudError(f"local cloud: the fleet host did not start: {detail}", provider="local")
    pid, host_id = int(words[1]), words[2]
    host_record(pid=pid, host_id=host_id)
    logger.info("local cloud: started fleet host %s (pid %s)", host_id, pid)
    return host_id


def host_record(*, pid: int, host_id: str) -> None:
    """Record the host now running (its pid with the pid's start time, so a reused pid is never taken for it)."""
    write_json(
        state_dir() / "host.json",
        {"pid": pid, "pid_start": start_time(pid), "host_id": host_id, "started_at": time.time()},
    )


def host_run_foreground() -> int:
    """Run the host in this process until it stops (``manage.py local_fleet_host``); refused if one runs."""
    state_dir().mkdir(exist_ok=True)
    lock = open(state_dir() / "host.lock", "a")  # noqa: SIM115 (held until the host listens, not for a block)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        answer = _ask({"op": "ping"})
        if answer is not None:
            raise base.PermanentCloudError(
                f"a fleet host already runs (pid {answer['pid']}, host {answer['host_id']})", provider="local"
            )

        def ready(line: str) -> None:
            _, pid, host_id = line.split()
            host_record(pid=int(pid), host_id=host_id)
            lock.close()

        return fleet_host.serve(state_dir(), on_ready=ready)
    finally:
        lock.close()


def host_view(instance_ids: Iterable[str] | None = None) -> HostView:
    """Which of these instances (all, for None) the host runs now; an empty view when no host runs."""
    ids = None if instance_ids is None else list(instance_ids)
    answer = _ask({"op": "status", "ids": ids})
    if answer is None:
        return HostView(host_id=None)
    _answered(answer)
    return HostView(host_id=answer["host_id"], running=frozenset(answer["running"]), ended=answer["ended"])


def instance_start(
    *, instance_id: str, env: dict[str, str], port: int, boot_delay_seconds: float, log_path: Path
) -> dict[str, Any]:
    """Start (or find, if it runs) the instance on the host, starting the host if needed.

    Its answer: ``host_id``, ``address``, ``port``, ``started_at``.
    """
    host_ensure()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    message = {
        "op": "start",
        "instance_id": instance_id,
        "env": env,
        "port": port,
        "boot_delay_seconds": boot_delay_seconds,
        "log": str(log_path),
    }
    answer = _ask(message)
    if answer is None:  # the host died between the two calls
        raise base.TransientCloudError("local cloud: the fleet host stopped during a start", provider="local")
    return _answered(answer)


def instance_stop(record: Mapping[str, Any]) -> None:
    """Stop the instance on its host, if that host still runs (else it is gone already)."""
    answer = _ask({"op": "stop", "instance_id": record["instance_id"]})
    if answer is not None:  # a later host does not know the instance: nothing to stop
        _answered(answer)


def instance_notice(record: Mapping[str, Any]) -> None:
    """Tell the instance its interruption notice has been posted (the agent reports it at once)."""
    answer = _ask({"op": "notice", "instance_id": record["instance_id"]})
    if answer is not None:
        _answered(answer)


def host_shutdown() -> bool:
    """Stop the host and every instance on it; whether one ran."""
    recorded = _recorded_host()
    answer = _ask({"op": "shutdown"})
    if answer is None:
        return False
    deadline = time.monotonic() + _SHUTDOWN_WAIT_SECONDS
    while recorded and alive(recorded.get("pid"), recorded.get("pid_start")):
        if time.monotonic() >= deadline:
            logger.warning("local cloud: the fleet host (pid %s) outlived its shutdown; killing it", recorded["pid"])
            with contextlib.suppress(ProcessLookupError):
                os.kill(recorded["pid"], signal.SIGKILL)
            break
        _pause.wait(0.02)
    return True
