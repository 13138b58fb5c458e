"""The sandbox every local instance runs in once customer commands are enabled.

The local cloud runs instances as processes of this machine, the machine the
control plane runs on. A customer's ``command`` is untrusted code, so with
``LOCAL_CLOUD_ALLOW_COMMANDS`` on, each instance runs under bubblewrap
(Debian's ``bubblewrap`` package):

* its own mount namespace: the file system is read-only; the data directory
  (``VAR_DIR``: database, secret key, stored objects, other instances' run
  directories), ``/root``, ``/home``, ``/run`` (database and broker sockets) and
  ``/tmp`` are replaced by empty tmpfs; only the interpreter, the project's code
  and the instance's own run directory (writable, its working directory) are
  bound back in;
* its own IPC and UTS namespaces;
* an unprivileged user of its own, ``SANDBOX_UID_BASE + its port`` (ports are
  unique among live instances, so no two live instances share a user): it can
  neither signal nor read the environment, files or memory of the service's
  processes or of another instance. Giving it that user needs root, so the
  service must run as root where commands are enabled (``sandbox_check`` says so);
* the scrubbed environment the adapter builds (no secret, no database URL).

It keeps the machine's PID namespace and process group on purpose, so that the
local cloud's SIGTERM, grace period and SIGKILL reach the command itself, as on a
real VM. bwrap's own process, which waits for the command and exits with its
status, ignores SIGTERM; the command gets the default action back (coreutils'
``env --default-signal``).

It shares the machine's network, as it must to serve its port on loopback and
to reach the API; a service on loopback that trusts every local connection (a
PostgreSQL with ``trust`` auth, a Redis without a password) is therefore reachable
from the instance: give those services passwords where commands are enabled
(docs/clouds.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from django.conf import settings

from placement.clouds import base

# Far above the ids Debian gives users and system accounts.
SANDBOX_UID_BASE = 100_000
# Replaced by an empty tmpfs: what an instance must not read, or must not share with another one.
_HIDDEN = ("/root", "/home", "/run", "/var/run", "/tmp", "/var/tmp", "/dev/shm")


class SandboxUnavailable(base.PermanentCloudError):
    """Customer commands are enabled but this machine cannot sandbox them."""


def sandbox_uid(port: int) -> int:
    return SANDBOX_UID_BASE + port


def _bwrap() -> str:
    found = shutil.which("bwrap")
    if found is None:
        raise SandboxUnavailable(
            "local cloud: LOCAL_CLOUD_ALLOW_COMMANDS is on but bubblewrap (bwrap) is not installed; "
            "install Debian's bubblewrap package or turn the setting off",
            provider="local",
        )
    return found


def _readable_roots() -> list[Path]:
    """What an instance needs to read: the interpreter (venv and base install) and the project's code."""
    roots = [Path(sys.base_prefix), Path(sys.prefix), Path(settings.BASE_DIR)]
    unique: list[Path] = []
    for root in (path.resolve() for path in roots):
        if root not in unique:
            unique.append(root)
    return sorted(unique, key=lambda root: len(root.parts))  # a parent before what it holds


def _traversable(path: Path, *, under: list[Path]) -> list[str]:
    """bwrap arguments making the directories between an emptied mount and ``path`` traversable.

    bwrap creates a bind's missing parents itself, but closed to all but root.
    """
    for top in under:
        if path.is_relative_to(top) and path != top:
            between = [parent for parent in path.parents if parent.is_relative_to(top) and parent != top]
            return [arg for parent in reversed(between) for arg in ("--perms", "0755", "--dir", str(parent))]
    return []


def sandbox_argv(argv: list[str], *, run_dir: Path, uid: int) -> list[str]:
    """``argv`` wrapped so that it runs in the instance's sandbox, in ``run_dir``, as ``uid``."""
    env = shutil.which("env") or "env"
    command = [env, "--ignore-signal=TERM", _bwrap(), "--ro-bind", "/", "/", "--dev", "/dev"]
    command += ["--ro-bind", "/proc", "/proc"]
    hidden = [Path(path) for path in _HIDDEN if Path(path).is_dir() and not Path(path).is_symlink()]
    for path in hidden:
        command += ["--tmpfs", str(path)]
    for root in _readable_roots():
        command += [*_traversable(root, under=hidden), "--ro-bind", str(root), str(root)]
    var_dir = Path(settings.VAR_DIR).resolve()
    command += [*_traversable(var_dir, under=hidden), "--tmpfs", str(var_dir)]
    command += [*_traversable(run_dir.resolve(), under=[var_dir]), "--bind", str(run_dir), str(run_dir)]
    command += ["--chdir", str(run_dir), "--unshare-ipc", "--unshare-uts", "--hostname", "instance"]
    # bwrap keeps root's capabilities for the mounts; setpriv then drops them with the user.
    setpriv = shutil.which("setpriv") or "setpriv"
    user = [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs"]
    return [*command, "--", *user, "--", env, "--default-signal=TERM", "--", *argv]


def sandbox_prepare(run_dir: Path, *, uid: int) -> None:
    """Give the instance's run directory to its user, closed to everyone else."""
    run_dir.mkdir(parents=True, exist_ok=True)
    os.chown(run_dir, uid, uid)
    run_dir.chmod(0o700)


def sandbox_check() -> None:
    """Run ``true`` in a sandbox like an instance's; ``SandboxUnavailable`` with bwrap's own words if it fails."""
    if os.geteuid() != 0:
        raise SandboxUnavailable(
            "local cloud: LOCAL_CLOUD_ALLOW_COMMANDS needs the service to run as root, to give each instance "
            "an unprivileged user of its own",
            provider="local",
        )
    probe_dir = Path(settings.VAR_DIR) / "local-cloud" / "sandbox-check"
    uid = sandbox_uid(0)
    sandbox_prepare(probe_dir, uid=uid)
    try:
        done = subprocess.run(
            sandbox_argv(["true"], run_dir=probe_dir, uid=uid),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxUnavailable(f"local cloud: the instance sandbox cannot start: {exc}", provider="local") from exc
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or [f"status {done.returncode}"])[-1]
        raise SandboxUnavailable(f"local cloud: the instance sandbox does not work here: {detail}", provider="local")
