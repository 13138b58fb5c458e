"""Paced sweeps: a periodic task that gives up its turn while its last pass runs or was long ago too little.

Beat sends a sweep every few seconds; a pass over tens of thousands of rows may take longer than
that. ``paced`` runs a pass only when none is running (on any worker) and the last one began at
least ``pace`` times its own length ago, so a sweep takes a bounded share of the workers however
much it has to look at, and its period grows with its work instead of its passes piling up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from django.core.cache import caches

T = TypeVar("T")

#: After a pass of ``s`` seconds the next begins no sooner than ``PACE * s`` after it began: a sweep
#: whose passes wake or watch workloads takes at most about a quarter of one worker.
PACE = 4
#: The same for upkeep nobody waits on (output collection, the arbitrage controller's tick).
UPKEEP_PACE = 10


def _clock() -> float:
    """Wall-clock seconds: passes made by different workers are spaced out by it."""
    return time.time()


def paced(name: str, sweep: Callable[[], T], *, pace: float = PACE, lock_seconds: float = 300) -> T | None:
    """Run ``sweep`` unless its turn is not due (see the module docstring); None when it was skipped.

    ``pace``: the ``PACE`` of this sweep. ``lock_seconds``: how long a pass cut short by a dead
    worker keeps the others out.
    """
    kv = caches["routing"]
    last = kv.get(f"paced:{name}:last")
    began = _clock()
    if last is not None and began < last["began"] + pace * last["took"]:
        return None
    if not kv.add(f"paced:{name}:running", 1, timeout=lock_seconds):
        return None
    try:
        return sweep()
    finally:
        kv.set(f"paced:{name}:last", {"began": began, "took": _clock() - began}, timeout=3600)
        kv.delete(f"paced:{name}:running")
