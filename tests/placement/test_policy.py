"""The arbitrage policy (placement.policy) as the controller sees it: an observation in, an action out.

No database and no Django: the module is pure, so these tests build observations by hand. The job
below needs 40 h of compute within 60 h (the line advances 2/3 s of progress per second), a launch
costs 720 s and the controller looks again every 60 s, so the default margin ahead of the line is
2 x 720 + 60 = 1500 s of time.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from placement.policy import (
    Keep,
    LaunchOnDemand,
    LaunchSpot,
    Observation,
    Pool,
    Stop,
    UniformProgress,
)

ROOT = Path(__file__).resolve().parents[2]
HOUR = 3600.0
JOB, DEADLINE, OVERHEAD, TICK = 40 * HOUR, 60 * HOUR, 720.0, 60.0
RATE = JOB / DEADLINE
MARGIN = OVERHEAD  # the default: one launch


def pools(*specs: tuple) -> tuple[Pool, ...]:
    """("a", 0.9), ("b", 1.0, {"refused": True}) ... -> Pools with an on-demand price of $3/h."""
    out = []
    for key, price, *extra in specs:
        out.append(Pool(key=key, spot_price=price, on_demand_price=3.0, **(extra[0] if extra else {})))
    return tuple(out)


def observe(**changes) -> Observation:
    """Ten hours in, nothing running, exactly on the line; `changes` override any field."""
    fields = {
        "elapsed": 10 * HOUR,
        "progress": 10 * HOUR * RATE,
        "job_length": JOB,
        "deadline": DEADLINE,
        "restart_overhead": OVERHEAD,
        "market": None,
        "pool": None,
        "starting": False,
        "preempted": False,
        "pools": pools(("a", 0.9), ("b", 1.0)),
        "tick": TICK,
    }
    fields.update(changes)
    return Observation(**fields)


def behind(**changes) -> Observation:
    return observe(progress=10 * HOUR * RATE - 600, **changes)


def ahead_by(seconds: float, **changes) -> Observation:
    """Progress leads the line by `seconds` of time."""
    return observe(progress=(10 * HOUR + seconds) * JOB / DEADLINE, **changes)


def outcome(action, capacity: set[str]):
    """What the controller ends up with: ("spot", pool), ("on_demand", pool), "keep" or "stop"."""
    while isinstance(action, LaunchSpot):
        for key in (action.pool, *action.fallbacks):
            if key in capacity:
                return ("spot", key)
        action = action.otherwise
    if isinstance(action, LaunchOnDemand):
        return ("on_demand", action.pool)
    return "keep" if isinstance(action, Keep) else "stop"


def launches_on_demand(action) -> bool:
    while isinstance(action, LaunchSpot):
        action = action.otherwise
    return isinstance(action, LaunchOnDemand)


def act(observation: Observation, **kwargs):
    return UniformProgress(**kwargs).act(observation)


# --- the rule --------------------------------------------------------------------------


def test_behind_the_line_with_no_spot_it_goes_on_demand():
    action = act(behind())

    assert outcome(action, capacity=set()) == ("on_demand", "a")


def test_with_spot_to_be_had_it_runs_on_spot_behind_the_line_or_ahead_of_it():
    assert outcome(act(behind()), capacity={"a", "b"}) == ("spot", "a")
    assert outcome(act(ahead_by(2 * HOUR)), capacity={"b"}) == ("spot", "b")


def test_ahead_by_the_margin_on_demand_with_spot_back_it_returns_to_spot():
    action = act(ahead_by(MARGIN, market="on_demand", pool="a"))

    assert outcome(action, capacity={"a"}) == ("spot", "a")
    assert outcome(action, capacity=set()) == "keep"  # no spot after all: stays on demand


def test_not_ahead_enough_on_demand_it_stays_on_demand():
    assert act(ahead_by(MARGIN - 1, market="on_demand", pool="a")) == Keep()
    assert act(behind(market="on_demand", pool="a")) == Keep()


def test_a_larger_margin_keeps_it_on_demand_longer():
    observation = ahead_by(MARGIN, market="on_demand", pool="a")

    assert act(observation, ahead_margin=2 * MARGIN) == Keep()
    assert isinstance(act(observation, ahead_margin=MARGIN), LaunchSpot)


def test_ahead_of_the_line_with_no_spot_it_waits_instead_of_going_on_demand():
    assert outcome(act(ahead_by(HOUR)), capacity=set()) == "keep"


def test_with_no_deadline_and_no_spot_it_waits_and_never_goes_on_demand():
    for observation in (observe(deadline=None), observe(job_length=None), observe(deadline=None, progress=0.0)):
        action = act(observation)
        assert outcome(action, capacity=set()) == "keep"
        assert not launches_on_demand(action)
        assert outcome(action, capacity={"b"}) == ("spot", "b")


def test_with_no_deadline_it_leaves_on_demand_for_spot_or_stops():
    action = act(observe(deadline=None, market="on_demand", pool="a"))

    assert outcome(action, capacity={"a"}) == ("spot", "a")
    assert outcome(action, capacity=set()) == "stop"


def test_with_on_demand_not_allowed_it_never_goes_on_demand_even_against_the_deadline():
    no_slack = 10 * HOUR + (JOB - 10 * HOUR * RATE)  # a deadline that leaves no time to lose
    for observation in (behind(), observe(deadline=no_slack), ahead_by(MARGIN, market="spot", pool="a")):
        action = act(dataclasses.replace(observation, on_demand_allowed=False))
        assert not launches_on_demand(action)
        assert outcome(action, capacity=set()) in ("keep", "stop")


def test_with_too_little_slack_left_it_goes_on_demand_even_when_spot_is_there():
    # Slack (time that may still be lost) below two launches and two ticks: spot is no longer safe.
    progress = 10 * HOUR * RATE
    deadline = 10 * HOUR + (JOB - progress) + 2 * OVERHEAD + 2 * TICK - 1
    for market, pool in ((None, None), ("spot", "a"), ("spot", "b")):
        assert act(observe(deadline=deadline, market=market, pool=pool)) == LaunchOnDemand("a")


def test_a_spot_launch_that_would_eat_the_last_reserve_goes_on_demand_instead():
    progress = 10 * HOUR * RATE
    deadline = 10 * HOUR + (JOB - progress) + 3 * OVERHEAD + 2 * TICK - 1
    action = act(observe(deadline=deadline))

    assert action == LaunchOnDemand("a")


def test_when_the_job_is_done_it_stops_what_runs():
    assert act(observe(progress=JOB, market="on_demand", pool="a")) == Stop()
    assert act(observe(progress=JOB)) == Keep()


# --- which pool ----------------------------------------------------------------------------


def test_a_refused_pool_is_tried_last():
    action = act(behind(pools=pools(("a", 0.9, {"refused": True}), ("b", 1.0), ("c", 1.1))))

    assert isinstance(action, LaunchSpot)
    assert (action.pool, action.fallbacks) == ("b", ("c", "a"))


def test_the_pool_that_just_reclaimed_the_instance_is_tried_last():
    action = act(behind(market="spot", pool="a", preempted=True))

    assert isinstance(action, LaunchSpot)
    assert (action.pool, action.fallbacks) == ("b", ("a",))


def test_spot_pools_are_tried_cheapest_first_counting_the_egress_over_the_work_left():
    # About 34 h of work left: b's $0.05/h less does not pay for moving the checkpoint there ($5) ...
    far = pools(("b", 0.95, {"egress_cost": 5.0}), ("a", 1.0))
    # ... but does pay for a $1 move.
    near = pools(("b", 0.95, {"egress_cost": 1.0}), ("a", 1.0))

    assert act(behind(pools=far)).pool == "a"
    assert act(behind(pools=near)).pool == "b"


def test_the_products_risk_adjusted_price_ranks_a_pool_when_given():
    ranked = pools(("a", 0.9, {"expected_price": 1.2}), ("b", 1.0))

    assert act(behind(pools=ranked)).pool == "b"


def test_a_pool_with_an_unknown_price_is_tried_after_the_priced_ones():
    action = act(behind(pools=(Pool("x", None, 3.0), *pools(("a", 0.9)))))

    assert (action.pool, action.fallbacks) == ("a", ("x",))


def test_on_demand_goes_where_it_costs_least_egress_included():
    options = (
        Pool("far", 0.9, on_demand_price=2.0, egress_cost=100.0),
        Pool("here", 1.0, on_demand_price=2.5),
        Pool("cheap", 1.1, on_demand_price=2.2, egress_cost=1.0),
    )

    assert outcome(act(behind(pools=options)), capacity=set()) == ("on_demand", "cheap")


def test_ahead_of_the_line_it_waits_for_the_cheapest_pool_until_waiting_costs_as_much_as_moving():
    # The checkpoint is in a; b is as cheap but moving there costs $1. A second of waiting is valued at
    # on demand's premium over spot, $2.1/h: so b joins after 1 / 2.1 h of waiting.
    options = pools(("a", 0.9, {"refused": True}), ("b", 0.9, {"egress_cost": 1.0}))
    break_even = HOUR / (3.0 - 0.9)

    early = act(ahead_by(HOUR, pools=options, idle_for=break_even * 0.9))
    late = act(ahead_by(HOUR, pools=options, idle_for=break_even * 1.1))
    unknown = act(ahead_by(HOUR, pools=options))

    assert outcome(early, capacity={"b"}) == "keep"
    assert outcome(late, capacity={"b"}) == ("spot", "b")
    assert outcome(unknown, capacity={"b"}) == ("spot", "b")
    assert outcome(act(behind(pools=options, idle_for=0.0)), capacity={"b"}) == ("spot", "b")


# --- what runs already ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "observation",
    [
        observe(market="spot", pool="a"),
        behind(market="spot", pool="b", starting=True),
        ahead_by(HOUR, market="spot", pool="b"),
        behind(market="on_demand", pool="a"),
        observe(market="on_demand", pool="a", starting=True),
    ],
    ids=["spot", "spot starting", "spot in a dearer pool", "on demand behind", "on demand starting"],
)
def test_already_running_where_it_should_it_keeps_it(observation):
    assert act(observation) == Keep()


def test_preempted_it_relaunches():
    for observation in (observe(market="spot", pool="a", preempted=True), behind(preempted=True, pool="a")):
        action = act(observation)
        assert isinstance(action, LaunchSpot)
        assert outcome(action, capacity={"a"}) == ("spot", "a")


# --- pure and stateless ------------------------------------------------------------------------


def test_it_is_stateless_the_same_observation_gives_the_same_action():
    policy = UniformProgress()
    observations = [behind(), ahead_by(MARGIN, market="on_demand", pool="a"), observe(deadline=None)]

    first = [policy.act(o) for o in observations]
    again = [policy.act(o) for o in reversed(observations)][::-1]

    assert first == again == [UniformProgress().act(o) for o in observations]


def test_the_module_imports_without_django():
    code = "import sys, placement.policy; sys.exit('django' in sys.modules)"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


# --- lifetimes, urgency (the additions that beat SkyNomad on the replay) -----------------------


def test_a_pool_that_keeps_dying_is_ranked_after_a_dearer_one_that_lasts():
    # a is cheaper but its instances live 20 min: every run pays a 12 min launch, so a's price is paid
    # 20 / 8 times per hour of work ($2.25/h), more than b's $1.0.
    dying = pools(("a", 0.9, {"expected_lifetime": 1200.0}), ("b", 1.0, {"expected_lifetime": 20 * HOUR}))

    action = act(behind(pools=dying))

    assert (action.pool, action.fallbacks) == ("b", ("a",))


def test_a_lifetime_longer_than_the_work_left_changes_nothing():
    lasting = pools(("a", 0.9, {"expected_lifetime": 100 * HOUR}), ("b", 1.0))

    assert act(behind(pools=lasting)) == act(behind())


def test_a_pool_whose_instances_die_before_the_launch_pays_off_is_tried_last_but_still_tried():
    useless = pools(("a", 0.5, {"expected_lifetime": OVERHEAD / 2}), ("b", 1.0), ("c", 1.1))

    action = act(behind(pools=useless))

    assert (action.pool, action.fallbacks) == ("b", ("c", "a"))


def test_a_price_spike_in_the_cheapest_pool_sends_a_launch_elsewhere_but_never_moves_a_live_instance():
    spiked = pools(("a", 2.9), ("b", 1.0))

    assert act(behind(pools=spiked)).pool == "b"
    assert act(behind(pools=spiked, market="spot", pool="a")) == Keep()


def test_a_move_whose_egress_is_not_worth_it_waits_for_the_checkpoints_pool_longer_when_far_ahead():
    # The checkpoint is in a (refused now); b costs a $1 move. On the line a second of waiting is worth on
    # demand's premium over spot; far ahead of it, only the share of the line's rate still needed.
    options = pools(("a", 0.9, {"refused": True}), ("b", 0.9, {"egress_cost": 1.0}))
    break_even = HOUR / (3.0 - 0.9)
    far_ahead = 10 * HOUR  # 20 h of work left in 50 h: 0.4 / (2/3) = 0.6 of the line's rate
    urgency = ((JOB - (10 * HOUR + far_ahead) * RATE) / (DEADLINE - 10 * HOUR)) / RATE

    assert outcome(act(ahead_by(HOUR, pools=options, idle_for=break_even * 1.1)), capacity={"b"}) == ("spot", "b")
    waited = break_even * 1.1  # enough on the line, not far ahead
    assert outcome(act(ahead_by(far_ahead, pools=options, idle_for=waited)), capacity={"b"}) == "keep"
    longer = break_even / urgency * 1.05
    assert outcome(act(ahead_by(far_ahead, pools=options, idle_for=longer)), capacity={"b"}) == ("spot", "b")


def test_in_a_crunch_it_goes_on_demand_whatever_the_lifetimes_say():
    progress = 10 * HOUR * RATE
    deadline = 10 * HOUR + (JOB - progress) + 2 * OVERHEAD + 2 * TICK - 1
    lasting = pools(("a", 0.9, {"expected_lifetime": 100 * HOUR}), ("b", 1.0, {"expected_lifetime": 100 * HOUR}))

    for market, pool in ((None, None), ("spot", "a")):
        assert act(observe(deadline=deadline, pools=lasting, market=market, pool=pool)) == LaunchOnDemand("a")


def test_behind_the_line_with_no_spot_dying_pools_do_not_keep_it_off_on_demand():
    dying = pools(("a", 0.9, {"expected_lifetime": OVERHEAD / 2}), ("b", 1.0, {"expected_lifetime": OVERHEAD / 2}))

    assert outcome(act(behind(pools=dying)), capacity=set()) == ("on_demand", "a")


# --- the replay wrapper's survival estimate (bench/arbitrage.py) -------------------------------


def _wrapper():
    replay_dir = ROOT.parent / "shared" / "replay"
    if not (replay_dir / "replay.py").exists():
        pytest.skip("the shared replay is not here")
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_arbitrage", ROOT / "bench" / "arbitrage.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_wrapper_learns_that_a_zone_keeps_dying_and_the_policy_then_prefers_another():
    arbitrage = _wrapper()
    replay = arbitrage.replay
    gap = 195.0

    def seen(tick, *, zone=None, mode=None, preempted=False, attempts=()):
        return replay.Observation(
            tick=tick, elapsed=tick * gap, gap=gap, deadline=DEADLINE, job_length=JOB, progress=0.0,
            restart_overhead=OVERHEAD, zone=zone, mode=mode, overhead_left=0.0, instance_age=0,
            preempted=preempted, checkpoint_zone=0, last_launch_ok=None, last_attempts=attempts,
            last_probes=(), spot_prices=(0.9, 1.0), od_prices=(3.0, 3.0), zones=("a", "b"),
            egress=((0.0, 0.0), (0.0, 0.0)), history=[],
        )  # fmt: skip

    wrapper = arbitrage.Arbitrage()
    tick = 0
    for _ in range(3):  # three instances in a, each reclaimed three ticks after its launch
        wrapper._track_lifetimes(seen(tick + 1, zone=0, mode="spot", attempts=((0, "spot", True),)))
        wrapper._track_lifetimes(seen(tick + 3, preempted=True))
        tick += 3
    # then one in b, released (not reclaimed) after 21 ticks
    wrapper._track_lifetimes(seen(tick + 1, zone=1, mode="spot", attempts=((1, "spot", True),)))
    wrapper._track_lifetimes(seen(tick + 21, zone=1, mode="spot"))
    wrapper._track_lifetimes(seen(tick + 22))
    tick += 22
    lifetimes = wrapper.lifetimes(seen(tick))

    lived_a, lived_b = 3 * 3 * gap, 21 * gap  # b: from its launch to the tick before it was seen gone
    pooled = (lived_a + lived_b) / 3  # all lived seconds over all reclaims
    assert lifetimes == pytest.approx([(lived_a + pooled) / 4, lived_b + pooled])
    assert wrapper.observation(seen(tick)).pools[0].expected_lifetime == pytest.approx(lifetimes[0])
    # a is cheaper, but its instances die soon after the launch is paid: b is tried first.
    assert wrapper.act(seen(tick + 10)) == replay.LaunchSpot(1, (0,), replay.LaunchOD(0))


def test_it_leaves_on_demand_only_for_a_pool_whose_saving_outweighs_a_likely_refusal():
    # 33 h of work left: on demand at $3/h against spot at $0.9/h saves about $70; a refusal costs a 720 s
    # relaunch on demand ($0.60). Only a pool all but certain to refuse is not worth the gamble.
    likely = ahead_by(MARGIN, market="on_demand", pool="a", pools=pools(("a", 0.9, {"refusal_rate": 0.9})))
    assert act(likely) == LaunchSpot("a", (), Keep())
    hopeless = ahead_by(MARGIN, market="on_demand", pool="a", pools=pools(("a", 0.9, {"refusal_rate": 0.995})))
    assert act(hopeless) == Keep()
    mixed = pools(("a", 0.9, {"refusal_rate": 0.995}), ("b", 1.0, {"refusal_rate": 0.1}))
    assert act(ahead_by(MARGIN, market="on_demand", pool="a", pools=mixed)) == LaunchSpot("b", (), Keep())


def test_a_refusal_rate_does_not_change_a_launch_from_nothing():
    options = pools(("a", 0.9, {"refusal_rate": 0.995}), ("b", 1.0))
    assert act(behind(pools=options)) == act(behind(pools=pools(("a", 0.9), ("b", 1.0))))
