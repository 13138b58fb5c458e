"""The beat lock: one holder at a time, and a holder that dies is replaced.

The lock under test is the deployment's: Redis when ``REDIS_URL`` is set (services
mode), else the file lock of the embedded default.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis

from arbitrage.beat import FileLeaderLock, RedisLeaderLock, leader_lock_from_settings
from tests.live import wait_until


class FileLocks:
    """File locks on one path; the holder that dies is another process killed while holding it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.holders: list[subprocess.Popen] = []

    def new(self) -> FileLeaderLock:
        return FileLeaderLock(self.path)

    def holder_that_dies(self) -> None:
        """Another process takes the lock and is killed holding it; it renews nothing, being gone."""
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import fcntl, os, sys\n"
                f"fd = os.open({str(self.path)!r}, os.O_RDWR | os.O_CREAT)\n"
                "fcntl.flock(fd, fcntl.LOCK_EX)\n"
                "print('held', flush=True)\n"
                "sys.stdin.read()\n",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.holders.append(holder)
        assert holder.stdout.readline() == b"held\n"
        assert not self.new().acquire()
        holder.kill()
        holder.wait(timeout=10)

    def close(self) -> None:
        for holder in self.holders:
            holder.kill()
            holder.wait(timeout=10)


class RedisLocks:
    """Redis locks on a key of this test; the holder that dies is one that stops renewing."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.key = f"test:beat:{uuid.uuid4().hex}"

    def new(self, ttl_seconds: float = 3) -> RedisLeaderLock:
        return RedisLeaderLock(self.url, key=self.key, ttl_seconds=ttl_seconds)

    def holder_that_dies(self) -> RedisLeaderLock:
        """A holder with a short TTL that never renews, as a crashed or stalled beat; returned to try later."""
        stalled = self.new(ttl_seconds=0.5)
        assert stalled.acquire()
        assert not self.new().acquire()
        return stalled

    def close(self) -> None:
        redis.Redis.from_url(self.url).delete(self.key)


@pytest.fixture
def locks(settings, tmp_path):
    deployed = RedisLocks(settings.REDIS_URL) if settings.REDIS_URL else FileLocks(tmp_path / "beat.lock")
    yield deployed
    deployed.close()


def test_one_holder_at_a_time_until_it_lets_go(locks):
    leader, standby = locks.new(), locks.new()
    assert leader.acquire()
    assert not standby.acquire()
    assert leader.renew()
    assert not standby.acquire()

    leader.release()
    assert not leader.renew()
    assert standby.acquire()
    assert standby.renew()
    assert not leader.acquire()
    standby.release()


def test_a_holder_that_dies_is_replaced(locks):
    stalled = locks.holder_that_dies()
    standby = locks.new()
    wait_until(standby.acquire, timeout=10, interval=0.1, what="the standby to take the lock")
    assert standby.renew()
    if stalled is not None:  # a Redis holder that only stalled finds the lock taken: it stops sending
        assert not stalled.renew()
    standby.release()


def test_the_lock_follows_redis_url(settings):
    settings.REDIS_URL = "redis://127.0.0.1:6379/9"
    assert isinstance(leader_lock_from_settings(), RedisLeaderLock)
    settings.REDIS_URL = ""
    lock = leader_lock_from_settings()
    assert isinstance(lock, FileLeaderLock)
    assert lock.path == Path(settings.VAR_DIR) / "beat.lock"


def test_a_redis_lock_without_redis_is_not_held():
    # Nothing listens on port 1: the beat waits as a standby instead of crashing.
    lock = RedisLeaderLock("redis://127.0.0.1:1/0", ttl_seconds=3)
    assert not lock.acquire()
    assert not lock.renew()
    lock.release()
