"""The local cloud's launcher and per-instance supervisor, in their own processes.

Standard library only: the launcher runs for every create as a script,
``python -S -P .../local/launcher.py`` (see ``processes.launch``), not as a module of
this package, so it must start fast and must not import Django or the package.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger("placement.clouds.local")

HAVE_PROC = Path("/proc/self/stat").exists()


def write_json(path: Path, data: object, *, mode: int = 0o600) -> None:
    """Write via a temporary file and ``os.replace``: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) from ``/proc/<pid>/stat``; None if there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its last ")".
    fields = raw.rpartition(")")[2].split()
    return fields[0], int(fields[19])  # fields 3 and 22


def start_time(pid: int) -> int | None:
    stat = proc_stat(pid) if HAVE_PROC else None
    return stat[1] if stat else None


def launcher_main() -> None:
    """The launcher process: fork the supervisor, wait until it has started the workload, exit.

    Reads its spec as JSON on stdin. Exiting at once makes the supervisor an
    orphan adopted by init, detached from whoever called ``create_instance``.
    """
    spec = json.load(sys.stdin)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        status = 70
        try:
            status = supervise(spec, write_end)
        except Exception:
            logger.exception("local cloud: the supervisor of %s failed", spec["instance_id"])
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as handshake:
        handshake.read()  # EOF: the supervisor has written launch.json (or died)


def supervise(spec: dict[str, Any], handshake_fd: int) -> int:
    """Run the workload in a new session, record its process ids, wait for it and record its exit."""
    os.setsid()
    run_dir = Path(spec["run_dir"])
    # Let go of the launcher's pipes (the caller waits for them to close) and log to the instance's file.
    log_fd = os.open(run_dir / "output.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null_fd, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(null_fd)
    os.close(log_fd)
    # terminate_instance signals the whole process group; the supervisor stays to record the exit.
    # (A Python handler, not SIG_IGN, which the workload would inherit.)
    signal.signal(signal.SIGTERM, lambda signum, frame: None)

    launch: dict[str, Any] = {
        "supervisor_pid": os.getpid(),
        "supervisor_start": start_time(os.getpid()),
        "pid": None,
        "pid_start": None,
        "port": spec["port"],
        "started_at": time.time(),
    }
    try:
        workload = subprocess.Popen(spec["argv"], env=spec["env"], cwd=run_dir, stdin=subprocess.DEVNULL)
    except OSError as exc:
        print(f"local cloud: cannot start {spec['argv']}: {exc}", file=sys.stderr, flush=True)
        write_json(run_dir / "launch.json", launch)
        write_json(run_dir / "exit.json", {"status": 127, "exited_at": time.time()})
        os.close(handshake_fd)
        return 0
    launch.update(pid=workload.pid, pid_start=start_time(workload.pid))
    write_json(run_dir / "launch.json", launch)
    os.close(handshake_fd)
    status = workload.wait()
    write_json(run_dir / "exit.json", {"status": status, "exited_at": time.time()})
    return 0


if __name__ == "__main__":
    launcher_main()
