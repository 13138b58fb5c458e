"""Celery beat that sends each schedule once however many beats are started.

Every beat process competes for one lock; the one holding it (the leader) sends,
any other (a standby) only retries the lock until it gets it. The lock follows
``REDIS_URL`` like the routing KV:

* **Redis** (services mode, several machines): a key set with ``SET NX PX`` and a
  random token (redis-py's ``Lock``), renewed by the leader on each tick and
  deleted on shutdown. A leader that dies stops renewing and the key expires after
  ``BEAT_LOCK_TTL_SECONDS``; a leader that finds the key no longer its own (it
  stalled past the TTL, or Redis lost it) stops sending at once.
* **File** (embedded default, one machine): ``fcntl.flock`` on ``VAR_DIR/beat.lock``,
  held for the life of the process; the kernel lets it go when the process dies.

A beat that becomes leader reads the schedule again from the database, so it
starts from the last-run times the previous leader saved (after every send) and
does not send again what was just sent. See docs/operations.md "Scaling and sizing".
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from typing import Protocol

import redis
from django.conf import settings
from django.db import DatabaseError
from django_celery_beat.schedulers import DatabaseScheduler
from redis.exceptions import LockError, RedisError

logger = logging.getLogger(__name__)

#: The Redis key of the beat lock (outside the cache aliases' prefixed keys).
REDIS_LOCK_KEY = "arbitrage:beat:leader"
LOCK_FILE_NAME = "beat.lock"


class LeaderLock(Protocol):
    def acquire(self) -> bool:
        """Take the lock if it is free; never waits."""

    def renew(self) -> bool:
        """Keep the lock this process holds; False when it is no longer ours."""

    def release(self) -> None:
        """Let the lock go, if it is still ours."""


class FileLeaderLock:
    """An exclusive ``flock`` on one file, held until released or the process ends."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def __str__(self) -> str:
        return f"file {self.path}"

    def acquire(self) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        # The holder's pid, for an operator who wonders which beat leads.
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def renew(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is None:
            return
        # The file stays: removing it would let a newcomer lock a fresh file while a
        # waiting beat still locks the old, unlinked one.
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


class RedisLeaderLock:
    """A Redis key with this process's token that expires ``ttl_seconds`` after its last renewal."""

    def __init__(self, url: str, *, key: str = REDIS_LOCK_KEY, ttl_seconds: float) -> None:
        self.key = key
        # A Redis that hangs must not hold a beat longer than a renewal interval.
        wait = max(1.0, ttl_seconds / 3)
        client = redis.Redis.from_url(url, socket_timeout=wait, socket_connect_timeout=wait)
        self._lock = client.lock(key, timeout=ttl_seconds, blocking=False, thread_local=False)
        self._held = False

    def __str__(self) -> str:
        return f"Redis key {self.key}"

    def acquire(self) -> bool:
        if self._held:
            return True
        try:
            self._held = bool(self._lock.acquire(blocking=False))
        except RedisError as exc:
            logger.warning("beat: cannot reach Redis for the beat lock: %s", exc)
            return False
        return self._held

    def renew(self) -> bool:
        if not self._held:
            return False
        try:
            self._lock.reacquire()
        except LockError:
            self._held = False  # expired, or another beat holds it now
        except RedisError as exc:
            # Unknown whether it is still ours: stop sending; the key expires if Redis stays away.
            logger.warning("beat: cannot renew the beat lock: %s", exc)
            self._held = False
        return self._held

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        try:
            self._lock.release()
        except LockError:
            pass  # it had expired: nothing of ours to delete
        except RedisError as exc:
            logger.warning("beat: cannot release the beat lock (it expires by itself): %s", exc)


def leader_lock_from_settings() -> LeaderLock:
    """The beat lock of this deployment: Redis when ``REDIS_URL`` is set, else a file under ``VAR_DIR``."""
    if settings.REDIS_URL:
        return RedisLeaderLock(settings.REDIS_URL, ttl_seconds=settings.BEAT_LOCK_TTL_SECONDS)
    return FileLeaderLock(Path(settings.VAR_DIR) / LOCK_FILE_NAME)


class LeaderScheduler(DatabaseScheduler):
    """django-celery-beat's ``DatabaseScheduler`` that sends only while it holds the beat lock."""

    def __init__(self, *args, **kwargs) -> None:
        self.leader_lock = leader_lock_from_settings()
        self.is_leader = False
        self._standby_logged = False
        # The leader renews (and a standby retries) at least this often, well inside the TTL.
        self.lock_interval = settings.BEAT_LOCK_TTL_SECONDS / 3
        super().__init__(*args, **kwargs)
        # Save each last-run time as soon as it is sent, so a beat taking over sees it.
        self.sync_every_tasks = 1

    def tick(self, *args, **kwargs) -> float:
        if not self._lead():
            return self.lock_interval
        return min(super().tick(*args, **kwargs), self.lock_interval)

    def reserve(self, entry):
        new_entry = super().reserve(entry)
        # django-celery-beat leaves the sent entry, with its old last-run time, in the schedule; a
        # heap rebuilt from it after a schedule change (another beat starting, an edit in the admin,
        # a take-over) would send the task again at once.
        if self._schedule.get(entry.name) is entry:
            self._schedule[entry.name] = new_entry
        return new_entry

    def close(self) -> None:
        try:
            super().close()  # the leader saves its last-run times before the next one reads them
        finally:
            self.leader_lock.release()
            self.is_leader = False

    def _lead(self) -> bool:
        if self.is_leader:
            if self.leader_lock.renew():
                return True
            self.is_leader = False
            self._standby_logged = False
            # Another beat leads now: what this one sent but has not saved must not overwrite its times.
            self._dirty.clear()
            logger.warning("beat: lost the beat lock (%s); stopped sending", self.leader_lock)
        if not self.leader_lock.acquire():
            if not self._standby_logged:
                logger.info("beat: standby, another beat holds the beat lock (%s)", self.leader_lock)
                self._standby_logged = True
            return False
        try:
            # Start from the last-run times in the database, not the ones read when this beat started.
            self._schedule = self.all_as_schedule()
        except DatabaseError as exc:
            logger.warning("beat: cannot read the schedule (%s); letting the beat lock go", exc)
            self.leader_lock.release()
            return False
        self.is_leader = True
        self._heap = None
        logger.info("beat: leader, holds the beat lock (%s)", self.leader_lock)
        return True
