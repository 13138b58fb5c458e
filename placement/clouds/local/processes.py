"""The local cloud's processes: launching an instance, telling whether it still runs, stopping it.

A short-lived *launcher* (a child of the caller, reaped at once) forks a *supervisor*
in its own session, which starts the workload and waits for it (``launcher.py``). The
workload therefore survives the Celery worker that created it being killed, never
becomes the worker's zombie, and its exit status is recorded by its real parent.
Liveness checks compare the start time in ``/proc/<pid>/stat`` so a reused PID is
never mistaken for the instance.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from django.conf import settings

from placement.clouds import base
from placement.clouds.local.launcher import HAVE_PROC, proc_stat
from placement.clouds.local.store import read_json, run_dir

logger = logging.getLogger("placement.clouds.local")

# The launcher needs only the standard library and runs as a script, not as a module of this package
# (which imports Django): -S, no site, and it starts several times faster; -P, its directory stays off sys.path.
_LAUNCHER = (sys.executable, "-S", "-P", str(Path(__file__).resolve().with_name("launcher.py")))
_LAUNCH_TIMEOUT_SECONDS = 30.0
_KILL_WAIT_SECONDS = 5.0
_POLL_SECONDS = 0.05
_pause = threading.Event()  # never set: ``_pause.wait(t)`` is an interruptible sleep
# Variables of this process an instance (or the fleet host) inherits; everything else (secrets,
# DATABASE_URL, ...) stays out, as it would on a real VM.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")


def alive(pid: int | None, start_time: int | None) -> bool:
    """Whether this very process (not a zombie, not a later one with the same PID) still runs."""
    if not pid:
        return False
    if not HAVE_PROC:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    stat = proc_stat(pid)
    if stat is None:
        return False
    state, started = stat
    return state not in {"Z", "X", "x"} and (start_time is None or started == start_time)


def agent_alive(record: Mapping[str, Any]) -> bool:
    return alive(record.get("pid"), record.get("pid_start"))


def supervisor_alive(record: Mapping[str, Any]) -> bool:
    return alive(record.get("supervisor_pid"), record.get("supervisor_start"))


def running(record: Mapping[str, Any]) -> bool:
    """The workload runs, or has just exited and its supervisor is still recording how."""
    if agent_alive(record):
        return True
    return supervisor_alive(record) and not (run_dir(record["instance_id"]) / "exit.json").exists()


def launch(instance_id: str, argv: list[str], env: dict[str, str], port: int) -> dict[str, Any]:
    """Start a detached instance process; its ``launch.json`` (process ids, port, start time)."""
    directory = run_dir(instance_id)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in ("launch.json", "exit.json"):
        (directory / stale).unlink(missing_ok=True)
    spec = {"instance_id": instance_id, "run_dir": str(directory), "argv": argv, "env": env, "port": port}
    try:
        done = subprocess.run(
            _LAUNCHER,
            input=json.dumps(spec),
            capture_output=True,
            text=True,
            cwd=settings.BASE_DIR,
            timeout=_LAUNCH_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise base.TransientCloudError(f"local cloud: launching {instance_id} timed out") from exc
    launched = read_json(directory / "launch.json")
    if done.returncode != 0 or launched is None:
        detail = (done.stderr.strip().splitlines() or [f"see {directory / 'output.log'}"])[-1]
        raise base.TransientCloudError(
            f"local cloud: launching {instance_id} failed (status {done.returncode}): {detail}"
        )
    return launched


def _signal_group(record: Mapping[str, Any], signum: int) -> None:
    # The supervisor leads the instance's process group. Its id cannot have been
    # reused while a member is alive, so only signal a group we know still exists.
    if not (agent_alive(record) or supervisor_alive(record)):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(record["supervisor_pid"], signum)
    if signum == signal.SIGKILL and agent_alive(record):  # it may have left the group
        with contextlib.suppress(ProcessLookupError):
            os.kill(record["pid"], signum)


def _wait_gone(record: Mapping[str, Any], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while agent_alive(record) or supervisor_alive(record):
        if time.monotonic() >= deadline:
            return False
        _pause.wait(_POLL_SECONDS)
    return True


def stop(record: Mapping[str, Any]) -> None:
    """SIGTERM the instance, SIGKILL it if it outlives the grace period."""
    if not record.get("supervisor_pid"):
        return
    _signal_group(record, signal.SIGTERM)
    if not _wait_gone(record, float(settings.LOCAL_CLOUD_STOP_GRACE_SECONDS)):
        logger.warning("local cloud: %s ignored SIGTERM; killing it", record["instance_id"])
        _signal_group(record, signal.SIGKILL)
        _wait_gone(record, _KILL_WAIT_SECONDS)
