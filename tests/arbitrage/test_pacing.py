"""Paced sweeps skip their turn while a pass runs or the last one was long (arbitrage/pacing.py)."""

from __future__ import annotations

import pytest
from django.core.cache import caches

from arbitrage import pacing
from workloads.tasks import readiness_sweep
from workloads.workflows import readiness


@pytest.fixture
def clock(monkeypatch):
    caches["routing"].clear()
    times: list[float] = []
    monkeypatch.setattr(pacing, "_clock", lambda: times.pop(0))
    return times


def test_a_long_pass_spaces_out_the_next_ones(clock):
    passes = []
    clock.extend([1000.0, 1002.0, 1003.0, 1010.0, 1011.0])  # when each turn comes, and each pass ends

    assert pacing.paced("sweep", lambda: passes.append(1) or "done") == "done"  # 1000-1002: took 2 s
    assert pacing.paced("sweep", lambda: passes.append(1)) is None  # 1003: sooner than 4 x 2 s after 1000
    assert pacing.paced("sweep", lambda: passes.append(1) or "done") == "done"  # 1010
    assert len(passes) == 2


def test_a_pass_never_overlaps_one_running_on_another_worker(clock):
    clock.extend([1000.0, 1000.5, 1001.0])
    inner = []

    def sweep() -> str:
        inner.append(pacing.paced("sweep", lambda: "second"))  # what another worker's turn gets meanwhile
        return "first"

    assert pacing.paced("sweep", sweep) == "first"
    assert inner == [None]


def test_the_readiness_task_marks_the_sweep_alive_even_when_it_skips(clock, monkeypatch, db):
    monkeypatch.setattr(readiness, "readiness_sweep_run", lambda: {"woken": 0})
    clock.extend([1000.0, 1010.0, 1011.0])  # the first pass took 10 s: the turn at 1011 is skipped

    assert readiness_sweep() == {"woken": 0}
    caches["routing"].delete(readiness.ALIVE_KEY)
    assert readiness_sweep() == {"skipped": 1}
    assert readiness.sweep_watching()
