"""One job replayed on a spot trace with the product's policy: what it would cost, and when it would finish.

The trace-driven local cloud (``placement/clouds/local/trace.py``) plays a trace to the real
service; this plays the same trace to the same pure policy (``placement.policy``) with nothing
in between, so the two can be compared: a launch succeeds where the trace has capacity, costs
``restart_overhead`` seconds billed without progress, a spot instance is reclaimed when its zone's
row says 0, and each second on an instance is billed at the price it was bought at (as the
product bills a segment). A reclaimed job moves at once to the best spot pool with capacity, as
the product's recovery does; every other move is the policy's. Time is in seconds from the job's
submission. Pure: no Django, no I/O.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from placement.policy import (
    Action,
    Keep,
    LaunchOnDemand,
    LaunchSpot,
    Observation,
    Policy,
    Pool,
    Stop,
    UniformProgress,
    spot_order,
)


@dataclass(frozen=True)
class ZoneSeries:
    """One zone of the trace: from each row's time on (seconds from submission), its capacity and spot price."""

    key: str
    times: tuple[float, ...]
    available: tuple[bool, ...]
    prices: tuple[float, ...]

    def row(self, at: float) -> int:
        return max(bisect.bisect_right(self.times, at) - 1, 0)


@dataclass
class ReplayOutcome:
    cost: float = 0.0
    finished_at: float | None = None
    launches: list[tuple[float, str, str]] = field(default_factory=list)  # (time, market, zone)


def _launch(action: Action, zones: dict[str, ZoneSeries], at: float) -> tuple[str | None, str | None] | None:
    """(market, zone) the action starts, (None, None) for a stop, None for keep."""
    if isinstance(action, Keep):
        return None
    if isinstance(action, Stop):
        return None, None
    if isinstance(action, LaunchOnDemand):
        return "on_demand", action.pool
    assert isinstance(action, LaunchSpot)
    for key in (action.pool, *action.fallbacks):
        zone = zones[key]
        if zone.available[zone.row(at)]:
            return "spot", key
    return _launch(action.otherwise, zones, at)


def trace_replay(
    *,
    zones: list[ZoneSeries],
    on_demand_price: float,
    job_length: float,
    deadline: float | None,
    restart_overhead: float,
    tick: float = 1.0,
    policy: Policy | None = None,
    horizon: float | None = None,
    launch_seconds: float | None = None,
) -> ReplayOutcome:
    """Replay the job tick by tick until its work is done (or ``horizon``, twice the deadline by default).

    ``launch_seconds``: how long each launch really takes before progress resumes, when that is known
    (e.g. measured on the system being compared); the policy is still told ``restart_overhead``, as the
    product's policy is. Default: ``restart_overhead``.
    """
    launch_seconds = restart_overhead if launch_seconds is None else launch_seconds
    policy = policy or UniformProgress()
    by_key = {zone.key: zone for zone in zones}
    end = horizon if horizon is not None else 2 * (deadline or job_length * 10)
    outcome = ReplayOutcome()
    at = progress = overhead_left = 0.0
    market: str | None = None
    pool: str | None = None
    bought_at = 0.0
    preempted = False
    idle_since = 0.0
    while at < end:
        if market == "spot" and not by_key[pool].available[by_key[pool].row(at)]:
            market, preempted, idle_since = None, True, at
        pools = tuple(Pool(key=z.key, spot_price=z.prices[z.row(at)], on_demand_price=on_demand_price) for z in zones)
        observation = Observation(
            elapsed=at,
            progress=progress,
            job_length=job_length,
            deadline=deadline,
            restart_overhead=restart_overhead,
            market=market if not preempted else None,
            pool=pool,
            starting=overhead_left > 0,
            preempted=preempted,
            pools=pools,
            tick=tick,
            idle_for=at - idle_since if market is None else None,
        )
        action = policy.act(observation)
        if preempted:
            # The product's recovery moves a reclaimed workload at once to the best spot pool with
            # capacity (workloads/recovery.py: migration); the policy decides everything else.
            order = spot_order(observation)
            if order:
                action = LaunchSpot(order[0], tuple(order[1:]), otherwise=action)
        preempted = False
        started = _launch(action, by_key, at)
        if started is not None and started != (market, pool):
            if market is not None and started[0] is None:
                idle_since = at
            market, pool = started
            if market is not None:
                zone = by_key[pool]
                bought_at = on_demand_price if market == "on_demand" else zone.prices[zone.row(at)]
                overhead_left = launch_seconds
                outcome.launches.append((at, market, pool))
        if market is not None:
            working = max(tick - overhead_left, 0.0)
            needed = job_length - progress
            used = tick if working < needed else tick - working + needed
            outcome.cost += bought_at * used / 3600
            overhead_left = max(overhead_left - tick, 0.0)
            progress += min(working, needed)
            if progress >= job_length:
                outcome.finished_at = at + used
                return outcome
        at += tick
    return outcome
