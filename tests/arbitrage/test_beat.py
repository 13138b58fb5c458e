"""Beat sends each schedule once, however many beats run, and a standby takes over from a dead leader."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from arbitrage.beat import REDIS_LOCK_KEY, LeaderScheduler
from arbitrage.celery import app
from tests.live import ROOT, database_url_for_tests, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

PROBE = "beat-probe"
PERIOD_SECONDS = 1
#: Sends of one beat are a period apart, less the time a first send takes to connect; two beats
#: sending would put some no more than half a period apart.
MIN_GAP_SECONDS = 0.75 * PERIOD_SECONDS
#: The beats' lock TTL: a standby retries every 0.7 s, a Redis key outlives a dead leader by 2 s.
LOCK_TTL_SECONDS = 2


def probe_schedule_only(*, every: int, period: str, last_run_at: dt.datetime | None = None) -> PeriodicTask:
    """The probe as the only enabled schedule (the ones the migrations made are switched off)."""
    PeriodicTask.objects.update(enabled=False)
    interval, _ = IntervalSchedule.objects.get_or_create(every=every, period=period)
    return PeriodicTask.objects.create(name=PROBE, task="tests.beat_probe", interval=interval, last_run_at=last_run_at)


class Beat:
    """A real ``celery beat`` process on the test database, with its own broker folder and lock under ``var_dir``."""

    def __init__(self, name: str, var_dir: Path) -> None:
        self.log_path = var_dir / f"beat-{name}.log"
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": database_url_for_tests(),
            "ARBITRAGE_VAR_DIR": str(var_dir),
            # What the beats send stays in files the test reads; the lock follows REDIS_URL as deployed.
            "CELERY_BROKER_URL": "filesystem://",
            "BEAT_LOCK_TTL_SECONDS": str(LOCK_TTL_SECONDS),
            "LOG_LEVEL": "INFO",
        }
        self.process: subprocess.Popen | None = None

    def start(self) -> Beat:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "arbitrage", "beat"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def role(self) -> str | None:
        """``leader`` or ``standby``, as this beat logged it first; None before it has decided."""
        for line in self.log_path.read_text(errors="replace").splitlines():
            for role in ("leader", "standby"):
                if f"beat: {role}" in line:
                    return role
        return None

    def kill(self) -> None:
        """SIGKILL: a crash, the beat releases nothing itself (a test ends it so too: nothing matters then)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


def probe_sends(queue: Path) -> list[tuple[int, int]]:
    """Each probe message that reached the broker as (monotonic ms when sent, pid of the beat that sent it)."""
    sends = []
    for path in queue.glob("*.msg"):
        message = json.loads(path.read_bytes())
        headers = message["headers"]
        if headers.get("periodic_task_name") == PROBE:
            # "origin" is "gen<pid>@<host>"; a message file's name starts with its send time.
            sends.append((int(path.name.partition("_")[0]), int(headers["origin"][3:].partition("@")[0])))
    return sorted(sends)


def gaps_seconds(sends: list[tuple[int, int]]) -> list[float]:
    return [(later[0] - earlier[0]) / 1000 for earlier, later in itertools.pairwise(sends)]


def test_two_beats_send_each_schedule_once_and_the_standby_takes_over_when_the_leader_dies(tmp_path):
    probe_schedule_only(every=PERIOD_SECONDS, period=IntervalSchedule.SECONDS)
    queue = tmp_path / "broker" / "queue"
    beats = [Beat("a", tmp_path).start(), Beat("b", tmp_path).start()]
    try:
        wait_until(lambda: all(beat.role() for beat in beats), timeout=60, what="both beats to start")
        roles = sorted(beats, key=lambda beat: beat.role())
        assert [beat.role() for beat in roles] == ["leader", "standby"]
        leader, standby = roles

        # Both run now: over two periods, only the leader sends, once a period.
        sent_before = len(probe_sends(queue))
        wait_until(lambda: len(probe_sends(queue)) >= sent_before + 2, timeout=30, what="two periods of sends")
        while_both_ran = probe_sends(queue)
        assert {pid for _, pid in while_both_ran} == {leader.pid}
        assert min(gaps_seconds(while_both_ran)) >= MIN_GAP_SECONDS, gaps_seconds(while_both_ran)

        # Killed mid-period (the polls above end just after a send), once that send's time is saved.
        time.sleep(0.3 * PERIOD_SECONDS)
        leader.kill()
        by_leader = probe_sends(queue)
        assert {pid for _, pid in by_leader} == {leader.pid}

        def sent_by_new_leader() -> list[tuple[int, int]]:
            return probe_sends(queue)[len(by_leader) :]

        wait_until(lambda: len(sent_by_new_leader()) >= 2, timeout=30, what="the standby to take over")
        after = sent_by_new_leader()
        assert {pid for _, pid in after} == {standby.pid}
        # The new leader goes on from the last-run time the dead one saved: no extra send at take-over.
        takeover = [by_leader[-1], *after]
        assert min(gaps_seconds(takeover)) >= MIN_GAP_SECONDS, gaps_seconds(takeover)
    finally:
        for beat in beats:
            beat.kill()
        if settings.REDIS_URL:  # the next run need not wait for the killed leader's key to expire
            redis.Redis.from_url(settings.REDIS_URL).delete(REDIS_LOCK_KEY)


class HandedLock:
    """A beat lock the test hands to the scheduler (``free``) and takes back (``take_back``)."""

    def __init__(self) -> None:
        self.free = False
        self.held = False

    def acquire(self) -> bool:
        self.held = self.held or self.free
        return self.held

    def renew(self) -> bool:
        return self.held

    def release(self) -> None:
        self.held = False

    def take_back(self) -> None:
        self.free = self.held = False


@pytest.fixture
def leading_scheduler(monkeypatch):
    """A ``LeaderScheduler`` in this process with a lock the test hands out, and the names it sends."""
    scheduler = LeaderScheduler(app=app)
    scheduler.leader_lock = HandedLock()
    sent: list[str] = []

    def send_task(name, *args, **kwargs):
        sent.append(kwargs["headers"]["periodic_task_name"])

    monkeypatch.setattr(scheduler, "send_task", send_task)
    return scheduler, scheduler.leader_lock, sent


def test_a_beat_sends_only_while_it_holds_the_lock_and_starts_from_the_saved_times(leading_scheduler):
    long_ago = timezone.now() - dt.timedelta(days=1)
    probe = probe_schedule_only(every=1, period=IntervalSchedule.HOURS, last_run_at=long_ago)
    scheduler, lock, sent = leading_scheduler

    scheduler.tick()
    assert sent == []  # another beat leads: nothing is sent though the probe is due

    # That leader sends and saves its time; then it dies and this beat takes over.
    PeriodicTask.objects.filter(pk=probe.pk).update(last_run_at=timezone.now())
    lock.free = True
    scheduler.tick()
    assert sent == []  # not sent twice: the time the other leader saved counts

    PeriodicTask.objects.filter(pk=probe.pk).update(last_run_at=long_ago)
    lock.take_back()
    scheduler.tick()
    assert sent == []  # lost the lock: stops sending

    lock.free = True
    scheduler.tick()
    assert sent == [PROBE]
    assert PeriodicTask.objects.get(pk=probe.pk).last_run_at > long_ago  # saved at once, for the next leader
    scheduler.tick()
    assert sent == [PROBE]  # once a period

    scheduler.close()
    assert not lock.held


def test_a_schedule_change_while_beat_sends_does_not_send_again(leading_scheduler, monkeypatch):
    probe_schedule_only(every=1, period=IntervalSchedule.HOURS, last_run_at=timezone.now() - dt.timedelta(days=1))
    scheduler, lock, sent = leading_scheduler
    lock.free = True
    # The schedule changes as the leader sends (another beat starting writes its default entries).
    changes = iter([True, True])
    monkeypatch.setattr(scheduler, "schedule_changed", lambda: next(changes, False))

    for _ in range(3):
        scheduler.tick()
    assert sent == [PROBE]


def test_a_beat_that_cannot_read_the_schedule_lets_the_lock_go(leading_scheduler, monkeypatch):
    probe_schedule_only(every=1, period=IntervalSchedule.HOURS, last_run_at=timezone.now() - dt.timedelta(days=1))
    scheduler, lock, sent = leading_scheduler
    lock.free = True

    def database_down():
        raise DatabaseError("connection refused")

    monkeypatch.setattr(scheduler, "all_as_schedule", database_down)
    scheduler.tick()
    assert sent == []
    assert not lock.held  # another beat may lead meanwhile
