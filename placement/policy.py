"""The arbitrage policy: where a deadline-bound, checkpointed job runs each tick (spot, on demand, or nowhere).

A pure module: the standard library only, no Django, no I/O, no clock, no randomness. The product's
controller builds an :class:`Observation` from its database every tick, asks a policy for an
:class:`Action` and carries it out; the unit tests and the spot-trace replay (``bench/arbitrage.py``)
call the same code.

The interface
-------------
``Pool`` is a candidate spot pool: its opaque ``key``, its spot price now (``None`` when unknown), the
on-demand price of the same capacity, whether a spot launch there was ``refused`` recently (no
capacity), the ``egress_cost`` of moving the checkpoint there (0 where it is), and, optionally,
``expected_price``: the product's risk-adjusted spot $/h (``Offer.expected_cost``; ``None`` = rank by
``spot_price``) and ``expected_lifetime``: the seconds a spot instance there is expected to live (a
survival estimate from the caller's own record of preemptions; ``None`` = unknown, the old ranking).

``Observation`` is everything the policy knows: time and work (``elapsed``, ``progress``,
``job_length``, ``deadline``, ``restart_overhead``, ``tick``), what it has now (``market``, ``pool``,
``starting``, ``preempted``, and, optionally, ``idle_for``: how long nothing has run), the candidate
``pools`` in the product's preference order, and whether on demand may be used at all.

Actions: ``Keep`` leaves things as they are (keep running, keep starting, keep waiting); ``Stop``
releases what runs and waits; ``LaunchSpot(pool, fallbacks, otherwise)`` tries spot in ``pool``, then
in each fallback in order, and applies ``otherwise`` (``Keep``, ``Stop`` or ``LaunchOnDemand``) when
none has capacity; ``LaunchOnDemand(pool)`` moves to on demand there. A policy never asks for what
already runs: then it answers ``Keep``.

The rule: Uniform Progress
--------------------------
:class:`UniformProgress` is Uniform Progress from Wu et al., "Can't Be Late: Optimizing Spot
Instance Savings under Deadlines", NSDI '24, with the product's additions. With ``J`` the job length,
``D`` the deadline, ``t`` the time elapsed, ``p`` the progress and ``d`` the restart overhead, the
line is ``p = t * J / D``: the progress that, kept up, finishes exactly at the deadline.

1. Spot while it is to be had: a live spot instance is kept; with nothing running it tries spot.
2. Behind the line, ``p < (t + d) * J / D`` (the switch itself costs ``d`` of the time), with no spot
   to be had: on demand (``LaunchSpot(..., otherwise=LaunchOnDemand(...))``); ahead of it, it waits.
3. From on demand back to spot only when ahead of the line by ``ahead_margin`` seconds of time,
   ``p >= (t + ahead_margin) * J / D``, by default one launch (``d``: hysteresis, it does not flap at the
   line, and after paying for the launch it is still on it); if no spot is to be
   had it stays on demand. Where pools carry a ``refusal_rate`` ``r``, only to a pool where the saving,
   had with chance ``1 - r``, beats the relaunch on demand a refusal costs (:func:`worth_leaving_on_demand`).
4. The paper's safety condition, in slack ``s = D - t - (J - p)`` (the time that may still be lost):
   with ``s < 2d + 2 tick`` it is on demand whatever the line says (one launch to get there, one more
   launch kept in reserve, a tick to notice each), and it launches spot (from nothing or from on
   demand) only while ``s >= 3d + 2 tick``, so that the spot launch's own overhead still leaves that
   reserve. Once the slack is that short it stays on demand to the end, as the paper's policy does.
5. Without a deadline or a job length there is no line: spot only, waiting when no pool has spot,
   never on demand. The same when ``on_demand_allowed`` is False (it may still keep a deadline only
   by luck: the controller's concern).

Which pool. Each spot pool is valued by what finishing there would cost, ``price * H + egress_cost``
(``price`` is ``expected_price`` when given, else ``spot_price``; ``H`` is the hours of work left
plus one restart; with an ``expected_lifetime`` ``E`` shorter than that, ``price * E / (E - d)``:
the work is done in runs of ``E``, each paying a launch of ``d`` without progress): cheapest first,
ties in the product's order, pools with an unknown price after the priced ones, and ``refused`` pools
(and the pool that just reclaimed the instance) last, as
fallbacks. Idle and not behind the line, it does not jump at once to a dearer pool (a move's egress,
a higher price) when the cheapest one has no capacity: a dearer pool joins the list only once the
waiting has cost as much as the extra, each second waited valued at on demand's premium over spot
times the urgency (``idle_for * (on_demand_price - spot $/h) * u``; at worst a second of slack spent
now is a second bought on demand later; ``u`` is the rate of progress still needed over the line's
rate, at most 1: far ahead of the line a second of slack is that much less likely to be bought back).
That is the break-even ("ski rental") rule: for that one choice it never pays more than twice what the
better of waiting and moving would have cost in hindsight. Behind the line (or
from on demand) every pool is tried at once, as Uniform Progress does. On demand goes to the pool
with the lowest ``on_demand_price * H + egress_cost``.

It is stateless: every call decides from the observation alone, so the controller may build a new
policy per tick. Every constant comes from the observation (``d``, ``tick``, the deadline, the prices)
or is a plain unit; none is fitted to any trace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class Pool:
    key: str  # opaque id of a spot pool (provider/region/zone/type in the product, a zone in the replay)
    spot_price: float | None  # $/h now, None when unknown
    on_demand_price: float  # $/h of the same capacity on demand
    refused: bool = False  # the last spot launch here was refused recently (capacity)
    egress_cost: float = 0.0  # $ to move the checkpoint here from where it is now (0 where it is)
    # Added: the product's risk-adjusted spot $/h (placement.risk's expected cost) used to rank the pool;
    # None = rank by spot_price.
    expected_price: float | None = None
    # Added: seconds a spot instance here is expected to live once launched (the controller's or the wrapper's
    # survival estimate from its own preemptions); None = unknown: then a launch is taken to last the work left.
    expected_lifetime: float | None = None
    # Added: the chance a spot launch here is refused now (the caller's record of launches and refusals, over
    # a prior); None = unknown: then only ``refused`` says anything about capacity.
    refusal_rate: float | None = None


@dataclass(frozen=True)
class Keep:
    """Leave things as they are: keep running, keep starting, or keep waiting with nothing."""


@dataclass(frozen=True)
class Stop:
    """Release what runs (if anything) and wait."""


KEEP = Keep()
STOP = Stop()


@dataclass(frozen=True)
class LaunchOnDemand:
    """Move to (or start in) on demand in ``pool``."""

    pool: str


@dataclass(frozen=True)
class LaunchSpot:
    """Try spot in ``pool``, then in each of ``fallbacks`` in order; if none has capacity, do ``otherwise``."""

    pool: str
    fallbacks: tuple[str, ...] = ()
    otherwise: Action = Keep()


Action = Keep | Stop | LaunchSpot | LaunchOnDemand


@dataclass(frozen=True)
class Observation:
    elapsed: float  # seconds since the job was submitted
    progress: float  # seconds of compute done and kept (checkpointed)
    job_length: float | None  # seconds of compute the job needs; None = unknown (then no deadline logic)
    deadline: float | None  # seconds from submission by which it must finish; None = none
    restart_overhead: float  # seconds a launch costs before progress resumes
    market: str | None  # "spot" | "on_demand" | None (nothing running or starting)
    pool: str | None  # key of the pool it runs or starts in
    starting: bool  # its instance is still starting (overhead not yet paid)
    preempted: bool  # its last spot instance was reclaimed since the last observation
    pools: tuple[Pool, ...]  # candidate pools, in the product's preference order (cheapest risk-adjusted first)
    on_demand_allowed: bool = True
    tick: float = 60.0  # seconds until the next observation
    # Added: seconds nothing has run (since the last instance ended, or since submission before the first);
    # None = unknown: then it never waits for a cheaper pool (see "Which pool" in the module docstring).
    idle_for: float | None = None


class Policy(Protocol):
    def act(self, observation: Observation) -> Action: ...


def _hours_of_work_left(o: Observation) -> float:
    """The hours a move is amortised over: the work left plus the launch that starts it.

    With no job length, the work still to come is taken to be as long as the work done so far (the
    only estimate the observation holds), and at least one launch's worth.
    """
    d = max(o.restart_overhead, 0.0)
    left = max(o.job_length - o.progress, 0.0) + d if o.job_length is not None else max(o.progress, d)
    return max(left, 1.0) / SECONDS_PER_HOUR  # at least a second: only to never divide by zero


def _price(pool: Pool) -> float | None:
    return pool.expected_price if pool.expected_price is not None else pool.spot_price


def _finish_cost(pool: Pool, hours: float, restart_overhead: float = 0.0) -> float | None:
    """$ to do the work left on spot in ``pool``: its price for the hours left, plus the move there.

    With an ``expected_lifetime`` ``E`` shorter than the work left, the work is done in runs of ``E``
    seconds, each starting with a launch of ``d`` (the restart overhead) billed without progress: the
    price is paid for ``E / (E - d)`` hours per hour of work (a pool whose instances die before the
    launch is paid off is priced as if each run made one second of progress).
    """
    price = _price(pool)
    if price is None:
        return None
    life = pool.expected_lifetime
    d = max(restart_overhead, 0.0)
    if life is not None and d > 0 and life < hours * SECONDS_PER_HOUR:
        price *= max(life, d) / max(life - d, 1.0)
    return price * hours + pool.egress_cost


def spot_order(o: Observation, *, budget: float | None = None) -> list[str]:
    """Spot pools to try, best first (see the module docstring): not refused, then priced, then cheapest.

    ``budget``: $ the job has already spent waiting (see :func:`waiting_budget`); a pool whose finishing
    cost exceeds the cheapest pool's by more than that is left out (None: none is left out).
    """
    hours = _hours_of_work_left(o)
    reclaimed = o.pool if o.preempted else None
    costs = {pool.key: _finish_cost(pool, hours, o.restart_overhead) for pool in o.pools}
    known = [c for c in costs.values() if c is not None]
    cheapest = min(known) if known else None

    def allowed(pool: Pool) -> bool:
        if budget is None or cheapest is None:
            return True
        cost = costs[pool.key]
        return cost is not None and cost - cheapest <= budget

    def key(indexed: tuple[int, Pool]) -> tuple:
        index, pool = indexed
        cost = costs[pool.key]
        shunned = pool.refused or pool.key == reclaimed
        return (shunned, cost is None, cost or 0.0, index)

    return [pool.key for _, pool in sorted(enumerate(o.pools), key=key) if allowed(pool)]


def waiting_budget(o: Observation) -> float | None:
    """$ the job has spent by waiting so far, valuing each second of slack at on demand's premium over spot.

    A second spent waiting is, at worst, a second that must later be bought on demand instead of on
    spot; that worst case is weighted by the urgency (:func:`_urgency`, at most 1).
    Moving to a dearer pool (egress, a higher price) is worth it only once the waiting has cost as much
    as the move would: the break-even ("ski rental") rule, which for that one choice never pays
    more than twice the better of waiting and moving in hindsight. None when ``idle_for`` is unknown.
    """
    if o.idle_for is None:
        return None
    hours = _hours_of_work_left(o)
    od_key = on_demand_pool(o)
    od_price = next((p.on_demand_price for p in o.pools if p.key == od_key), None)
    spot = [c for c in (_finish_cost(p, hours, o.restart_overhead) for p in o.pools) if c is not None]
    if od_price is None or not spot:
        return None
    best_spot_rate = min(spot) / hours
    premium = max(od_price - best_spot_rate, 0.0) * _urgency(o)
    return max(o.idle_for, 0.0) * premium / SECONDS_PER_HOUR


def _urgency(o: Observation) -> float:
    """How binding the deadline is: the rate of progress still needed over the line's rate (1 on the line).

    Ahead of the line a second of slack is worth proportionally less than on it; without a deadline, 1.
    """
    if o.deadline is None or o.job_length is None or o.deadline <= 0 or o.job_length <= 0:
        return 1.0
    time_left = o.deadline - o.elapsed
    if time_left <= 0:
        return 1.0
    needed = max(o.job_length - o.progress, 0.0) / time_left
    return min(needed / (o.job_length / o.deadline), 1.0)


def on_demand_pool(o: Observation) -> str | None:
    """The pool where on demand costs least for the work left, egress included (ties: the product's order)."""
    if not o.pools:
        return None
    hours = _hours_of_work_left(o)
    return min(o.pools, key=lambda pool: pool.on_demand_price * hours + pool.egress_cost).key


def worth_leaving_on_demand(o: Observation, order: list[str]) -> list[str]:
    """The pools of ``order`` worth leaving a live on-demand instance for, given the chance of a refusal.

    Leaving is a gamble when the caller cannot try spot before letting on demand go (the product's
    move releases the old instance first): with chance ``r`` the launch is refused and the job pays a
    launch of ``d`` on demand again to get back; otherwise it saves on demand's cost minus the pool's
    for the work left. A pool stays in the list while ``(1 - r) * saving > r * d * on_demand_price``.
    Pools with no ``refusal_rate`` are kept (nothing is known against them).
    """
    hours = _hours_of_work_left(o)
    d_hours = max(o.restart_overhead, 0.0) / SECONDS_PER_HOUR
    by_key = {pool.key: pool for pool in o.pools}
    current = by_key.get(o.pool) if o.pool is not None else None
    worth = []
    for key in order:
        pool = by_key[key]
        r = pool.refusal_rate
        if r is None:
            worth.append(key)
            continue
        od_price = current.on_demand_price if current is not None else pool.on_demand_price
        cost = _finish_cost(pool, hours, o.restart_overhead)
        if cost is None:
            continue
        saving = od_price * hours - cost
        if (1.0 - min(max(r, 0.0), 1.0)) * saving > r * d_hours * od_price:
            worth.append(key)
    return worth


def _try_spot(order: list[str], otherwise: Action) -> Action:
    if not order:
        return otherwise
    return LaunchSpot(order[0], tuple(order[1:]), otherwise)


class UniformProgress:
    """Uniform Progress (Wu et al., NSDI '24) with the product's additions; the rule is the module's docstring.

    ``ahead_margin``: seconds of time by which progress must lead the line before leaving on demand
    for spot. Default ``restart_overhead``: leaving costs one launch, and after paying it the job is
    still on the line; should the spot be reclaimed at once, the safety reserve (rule 4) still covers
    the way back. (The same default is what ``bench/arbitrage.py`` replays.)
    """

    def __init__(self, *, ahead_margin: float | None = None) -> None:
        if ahead_margin is not None and ahead_margin < 0:
            raise ValueError("ahead_margin must be >= 0")
        self.ahead_margin = ahead_margin

    def act(self, observation: Observation) -> Action:
        o = observation
        d = max(o.restart_overhead, 0.0)
        tick = max(o.tick, 0.0)
        live = o.market is not None and not o.preempted  # running or starting
        if o.job_length is not None and o.progress >= o.job_length:
            return STOP if live else KEEP
        # A reclaimed instance is gone: nothing runs, whatever `market` still says. (A live spot instance is
        # kept below, so no order ever names the pool and market it already runs in.)
        order = spot_order(o)

        deadline_logic = o.deadline is not None and o.deadline > 0 and o.job_length is not None and o.job_length > 0
        if not deadline_logic or not o.on_demand_allowed:
            return self._spot_only(o, live, order)

        job, deadline = float(o.job_length), float(o.deadline)
        slack = deadline - o.elapsed - (job - o.progress)
        od_pool = on_demand_pool(o)
        on_demand = LaunchOnDemand(od_pool) if od_pool is not None else KEEP
        on_od_now = live and o.market == "on_demand"

        # 4. Safety: too little slack left to risk spot.
        if slack < 2 * d + 2 * tick:
            return KEEP if on_od_now or od_pool is None else on_demand
        may_launch_spot = slack >= 3 * d + 2 * tick

        if live and o.market == "spot":
            return KEEP  # 1. spot while it lasts
        if on_od_now:
            margin = self.ahead_margin if self.ahead_margin is not None else d
            ahead = o.progress >= (o.elapsed + margin) * job / deadline
            if ahead and may_launch_spot:
                return _try_spot(worth_leaving_on_demand(o, order), KEEP)  # 3. back to spot, else stay
            return KEEP
        # Nothing runs (or it was reclaimed): 1.-2.
        if not may_launch_spot:
            return on_demand
        behind = o.progress < (o.elapsed + d) * job / deadline
        if behind:
            return _try_spot(order, on_demand)
        return _try_spot(spot_order(o, budget=waiting_budget(o)), KEEP)

    @staticmethod
    def _spot_only(o: Observation, live: bool, order: list[str]) -> Action:
        """5. No line to keep, or on demand not allowed: spot when it is to be had, otherwise wait."""
        if live and o.market == "spot":
            return KEEP
        if live:  # on demand, which this mode never uses: move to spot, or release it and wait
            return _try_spot(order, STOP)
        return _try_spot(order, KEEP)
