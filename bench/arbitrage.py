"""The product's arbitrage policy replayed on real spot traces, against UP(S), the oracle and on demand.

    python3 /work/shared/replay/replay.py --policy bench/arbitrage.py:Arbitrage    # from the repo root
    .venv/bin/python bench/arbitrage.py                                            # the whole comparison

``Arbitrage`` is a policy for the shared replay (``../shared/replay/replay.py``, or the folder in
``ARBITRAGE_REPLAY_DIR``): it translates the replay's observation into ``placement.policy``'s, asks
``UniformProgress`` (stateless) and translates the answer back. What the replay does not hand over
directly but the product's controller keeps in its database lives here: which zones refused a spot
launch, or reclaimed an instance, recently.

Run as a script it replays the V100 panel (SkyNomad Figure 9(b): 3 zones, 5 windows of 60 h) for
Arbitrage, UP(S), Optimal and on demand, prints each one's cost per window, mean, deadlines met and the
safety net's takeovers (``net``), replays Arbitrage again with the safety net off to count its own
deadline misses, then the same for other zone sets of the archive (``OTHER_ZONE_SETS``: Arbitrage,
UP(S), Optimal, the saving vs UP(S)), and prints last ``arbitrage ratio: <Arbitrage mean / Optimal
mean> (target < T)``, ``T`` being SkyNomad's 1.117 once the ratio is below it, UP(S)'s 1.26 otherwise.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
REPLAY_DIR = Path(os.environ.get("ARBITRAGE_REPLAY_DIR") or ROOT.parent / "shared" / "replay")
if "replay" not in sys.modules and str(REPLAY_DIR) not in sys.path:
    sys.path.insert(0, str(REPLAY_DIR))

import replay  # noqa: E402  (the simulator's module: under replay.py it is replay.py itself)

from placement import policy as ours  # noqa: E402

TARGET = 1.26  # UP(S)'s published level on this panel, 47.02 / 37.37
SKYNOMAD_TARGET = 1.117  # SkyNomad's level on this panel, 41.73 / 37.37 (the goal)
# Other zone sets of the same archive (the panel's windows), to check the policy is not fitted to the panel:
# two sets of 3 zones with none of the panel's, and all 9 zones.
OTHER_ZONE_SETS = (
    ("us-east-1a", "us-east-2a", "us-west-2b"),
    ("us-east-1d", "us-east-1f", "us-west-2c"),
    (
        "us-east-1a",
        "us-east-1c",
        "us-east-1d",
        "us-east-1f",
        "us-east-2a",
        "us-east-2b",
        "us-west-2a",
        "us-west-2b",
        "us-west-2c",
    ),
)


class Arbitrage(replay.Policy):
    """``placement.policy.UniformProgress`` on the replay's interface.

    Memory kept here (the policy is stateless): per zone, the time of the latest spot outcome and
    whether it was a failure (a refused launch try, or a reclaimed instance); and per zone the seconds
    its spot instances lived and how many were reclaimed, for ``Pool.expected_lifetime``: lived seconds
    (the live instance's age included) plus a prior, over reclaims plus one. The prior is one run of the
    mean lifetime over all zones (empirical Bayes: a zone not yet seen is taken to be like the others),
    or of the whole job before any reclaim at all (no evidence of any death yet). A zone is ``refused``
    while its latest outcome is a failure less than one restart overhead old: that is how long a
    launch there would take to pay off anyway, and capacity that just went is unlikely to be back
    sooner. The product's controller keeps the same fact in its database.
    """

    name = "Arbitrage"

    def __init__(self, policy: ours.Policy | None = None) -> None:
        self.policy = policy  # None: UniformProgress with a margin of one launch (see policy_for)
        self.reset()

    def policy_for(self, o: replay.Observation) -> ours.Policy:
        """The policy asked this tick: the given one, else the product's ``UniformProgress()`` with its defaults."""
        return self.policy or ours.UniformProgress()

    def reset(self) -> None:
        self.failed_at: dict[int, float] = {}  # zone -> elapsed s of its latest failure (absent: latest was a success)
        self.idle_since: float | None = 0.0  # elapsed s when nothing has run since (None: something runs)
        self.exposure: dict[int, float] = {}  # zone -> s its ended spot instances lived, in all
        self.deaths: dict[int, int] = {}  # zone -> spot instances reclaimed there
        self.live: tuple[int, float] | None = None  # (zone, elapsed s at launch) of the live spot instance

    def _end_run(self, at: float, *, reclaimed: bool) -> None:
        zone, since = self.live
        self.exposure[zone] = self.exposure.get(zone, 0.0) + max(at - since, 0.0)
        if reclaimed:
            self.deaths[zone] = self.deaths.get(zone, 0) + 1
        self.live = None

    def _track_lifetimes(self, o: replay.Observation) -> None:
        previous = o.elapsed - o.gap
        launched = [zone for zone, kind, ok in o.last_attempts if kind == "spot" and ok]
        if launched:
            if self.live is not None and self.live[0] != launched[-1]:
                self._end_run(previous, reclaimed=False)
            self.live = (launched[-1], previous)
        if self.live is None:
            return
        if o.preempted:
            self._end_run(o.elapsed, reclaimed=True)
        elif o.mode != "spot" or o.zone != self.live[0]:
            self._end_run(previous, reclaimed=False)

    def lifetimes(self, o: replay.Observation) -> list[float]:
        """Expected spot lifetime per zone, s: lived seconds over deaths, with one prior death (see the class)."""
        open_age = {}
        if self.live is not None:
            open_age[self.live[0]] = max(o.elapsed - self.live[1], 0.0)
        seen = [self.exposure.get(z, 0.0) + open_age.get(z, 0.0) for z in range(len(o.zones))]
        deaths = sum(self.deaths.values())
        pooled = sum(seen) / deaths if deaths else o.job_length
        return [(seen[z] + pooled) / (self.deaths.get(z, 0) + 1) for z in range(len(o.zones))]

    def _remember(self, o: replay.Observation) -> None:
        previous = o.elapsed - o.gap
        for zone, kind, ok in o.last_attempts:
            if kind != "spot":
                continue
            if ok:
                self.failed_at.pop(zone, None)
            else:
                self.failed_at[zone] = previous
        for zone, ok in o.last_probes:
            if ok:
                self.failed_at.pop(zone, None)
            else:
                self.failed_at[zone] = previous
        if o.preempted and o.history:
            reclaimed = o.history[-1].zone
            if reclaimed is not None:
                self.failed_at[reclaimed] = o.elapsed
        if o.zone is not None:
            self.idle_since = None
        elif self.idle_since is None:
            self.idle_since = o.elapsed

    def observation(self, o: replay.Observation) -> ours.Observation:
        recent = max(o.restart_overhead, o.gap)
        here = o.checkpoint_zone
        lifetimes = self.lifetimes(o)
        pools = tuple(
            ours.Pool(
                key=o.zones[z],
                spot_price=o.spot_prices[z],
                on_demand_price=o.od_prices[z],
                refused=z in self.failed_at and o.elapsed - self.failed_at[z] < recent,
                egress_cost=o.egress[here][z] if here is not None else 0.0,
                expected_lifetime=lifetimes[z],
            )
            for z in sorted(range(len(o.zones)), key=lambda z: o.spot_prices[z])  # the product's order
        )
        reclaimed = o.history[-1].zone if o.preempted and o.history else None
        zone = o.zone if o.zone is not None else reclaimed
        return ours.Observation(
            elapsed=o.elapsed,
            progress=o.progress,
            job_length=o.job_length,
            deadline=o.deadline,
            restart_overhead=o.restart_overhead,
            market={"spot": "spot", "od": "on_demand"}.get(o.mode) if not o.preempted else "spot",
            pool=o.zones[zone] if zone is not None else None,
            starting=o.overhead_left > 0,
            preempted=o.preempted,
            pools=pools,
            on_demand_allowed=True,
            tick=o.gap,
            idle_for=o.elapsed - self.idle_since if self.idle_since is not None else 0.0,
        )

    def action(self, a: ours.Action, zones: tuple) -> replay.Action:
        index = {name: z for z, name in enumerate(zones)}
        if isinstance(a, ours.Keep):
            return replay.KEEP
        if isinstance(a, ours.Stop):
            return replay.STOP
        if isinstance(a, ours.LaunchOnDemand):
            return replay.LaunchOD(index[a.pool])
        if isinstance(a, ours.LaunchSpot):
            fallbacks = tuple(index[key] for key in a.fallbacks)
            return replay.LaunchSpot(index[a.pool], fallbacks, self.action(a.otherwise, zones))
        raise TypeError(f"unknown action {a!r}")

    def act(self, o: replay.Observation) -> replay.Action:
        self._remember(o)
        self._track_lifetimes(o)
        return self.action(self.policy_for(o).act(self.observation(o)), o.zones)


# --- the comparison ------------------------------------------------------------------


def _run(ts, factory, *, safety_net: bool = True) -> list:
    return [replay.run_policy(ts, w, factory, safety_net=safety_net) for w in ts.windows]


def _mean(results) -> float:
    return sum(r.cost for r in results) / len(results)


def _row(label: str, results) -> str:
    costs = " ".join(f"{r.cost:>8.2f}" for r in results)
    met = sum(r.met for r in results)
    nets = [f"w{r.window}@{r.safety_net_tick}" for r in results if r.safety_net_tick is not None]
    launches = sum(r.launches for r in results)
    migrations = sum(r.migrations for r in results)
    egress = sum(r.egress_cost for r in results)
    od = sum(r.od_ticks for r in results)
    return (
        f"{label:<22} {costs} {_mean(results):>8.2f} {met:>3}/{len(results)} {launches:>5} {migrations:>5} "
        f"{egress:>7.2f} {od:>5}  {', '.join(nets) or '-'}"
    )


def _other_sets() -> None:
    """Arbitrage, UP(S) and Optimal on each of OTHER_ZONE_SETS (the panel's windows), with the saving vs UP(S)."""
    print("other zone sets (mean $ per job over the panel's windows; net: safety-net takeovers; no net: misses)")
    print(f"{'zones':<52} {'ours':>9} {'UP(S)':>8} {'Optimal':>8} {'ratio':>6} {'vs UP(S)':>8} {'net':>4} {'miss':>4}")
    for zones in OTHER_ZONE_SETS:
        ts = replay.load_v100(zones=zones)
        ours_, ups, best = _run(ts, Arbitrage), _run(ts, replay.UPS), _run(ts, "Optimal")
        bare = _run(ts, Arbitrage, safety_net=False)
        label = ",".join(zones) if len(zones) <= 3 else f"all {len(zones)} zones"
        saving = 1 - _mean(ours_) / _mean(ups)
        takeovers = sum(r.safety_net_tick is not None for r in ours_)
        misses = sum(not r.met for r in bare)
        print(
            f"{label:<52} {_mean(ours_):>9.2f} {_mean(ups):>8.2f} {_mean(best):>8.2f} "
            f"{_mean(ours_) / _mean(best):>6.3f} {saving:>8.1%} {takeovers:>4} {misses:>4}"
        )


def main() -> int:
    t0 = time.perf_counter()
    ts = replay.load_v100()
    print(f"V100 panel: zones {', '.join(ts.zones)}; windows {ts.windows}; job {ts.job / 3600:.2f} h, ", end="")
    print(f"deadline {ts.deadline / 3600:.2f} h, tick {ts.gap} s, restart overhead {ts.overhead:.0f} s")
    runs = {
        "Arbitrage": _run(ts, Arbitrage),
        "UP(S)": _run(ts, replay.UPS),
        "Optimal": _run(ts, "Optimal"),
        "on demand": _run(ts, replay.OnDemandOnly),
    }
    bare = _run(ts, Arbitrage, safety_net=False)
    windows = " ".join(f"{'w' + str(w):>8}" for w in ts.windows)
    print(f"{'$ per job':<22} {windows} {'mean':>8} {'met':>5} {'lnch':>5} {'migr':>5} {'egress':>7} {'od':>5}  net")
    for label, results in runs.items():
        print(_row(label, results))
    print(_row("Arbitrage, no net", bare))
    misses = [r.window for r in bare if not r.met]
    takeovers = sum(r.safety_net_tick is not None for r in runs["Arbitrage"])
    print(
        f"Arbitrage: safety net took over in {takeovers} of {len(ts.windows)} windows; "
        f"without it, deadlines missed in {len(misses)} ({', '.join(f'w{w}' for w in misses) or 'none'})"
    )
    _other_sets()
    print(f"wall {time.perf_counter() - t0:.1f} s")
    ratio = _mean(runs["Arbitrage"]) / _mean(runs["Optimal"])
    target = SKYNOMAD_TARGET if round(ratio, 3) < SKYNOMAD_TARGET else TARGET
    print(f"arbitrage ratio: {ratio:.3f} (target < {target})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
