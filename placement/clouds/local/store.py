"""The local cloud's state on disk, under ``VAR_DIR/local-cloud``, shared by every process using it.

* ``instances/<id>.json``: one record per instance, written atomically. The id
  is derived from the provider and the idempotency token, so the record *is*
  the token→instance mapping, and a retried create finds it.
* ``run/<id>/``: the instance's working directory, ``output.log`` (its stdout
  and stderr), ``launch.json`` (its process ids), ``exit.json`` (its exit
  status, once it has exited) and ``interruption-notice.json`` (its spot
  interruption notice, once it has one).
* ``faults.json``: injected faults, shared by every process (``faults_set``).
* ``lock``: an ``flock`` serialising creates and state changes across processes;
  ``locks/<id>.lock`` one per idempotency token.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings

from placement.clouds.local.launcher import write_json

_INSTANCE_ID = re.compile(r"^local-[0-9a-f]{12}$")


def root_dir() -> Path:
    root = Path(settings.VAR_DIR) / "local-cloud"
    # One stat on the hot path (every record read); the folders are made when it fails.
    if not os.path.isdir(root / "run"):
        (root / "instances").mkdir(parents=True, exist_ok=True)
        (root / "run").mkdir(exist_ok=True)
    return root


def _record_path(instance_id: str) -> Path:
    return root_dir() / "instances" / f"{instance_id}.json"


def run_dir(instance_id: str) -> Path:
    return root_dir() / "run" / instance_id


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """Hold the machine-wide lock. Not reentrant: never nest it."""
    with open(root_dir() / "lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


@contextlib.contextmanager
def token_locked(provider: str, token: str) -> Iterator[None]:
    """Hold the lock of one idempotency token (per provider), across processes."""
    locks = root_dir() / "locks"
    locks.mkdir(exist_ok=True)
    with open(locks / f"{next(candidate_ids(provider, token))}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def candidate_ids(provider: str, token: str) -> Iterator[str]:
    """Stable ids for a token; later ones only in the (unlikely) event of a hash collision."""
    for salt in itertools.count():
        digest = hashlib.sha256(f"{provider}\n{token}\n{salt}".encode()).hexdigest()
        yield f"local-{digest[:12]}"


def load(instance_id: str) -> dict[str, Any] | None:
    # The id becomes a path: accept only ids this cloud makes.
    if not _INSTANCE_ID.match(instance_id):
        return None
    return read_json(_record_path(instance_id))


def save(record: dict[str, Any]) -> None:
    write_json(_record_path(record["instance_id"]), record)


def all_records() -> list[dict[str, Any]]:
    records = []
    for path in (root_dir() / "instances").glob("local-*.json"):
        record = read_json(path)
        if record is not None:
            records.append(record)
    return sorted(records, key=lambda record: record["launched_at"])


def notice_path(instance_id: str) -> Path:
    return run_dir(instance_id) / "interruption-notice.json"
