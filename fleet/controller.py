"""The arbitrage controller: every tick, ask the policy what each live workload should do, and do it.

A beat task (``workloads.arbitrage_tick``, every ``ARBITRAGE_TICK_SECONDS``) looks at
each workload that is waiting, starting, running or recovering, builds the policy's
``Observation`` from the database (``placement.policy``: a pure module), and carries
the answer out through the durable workflows (docs/architecture.md §15):

* ``LaunchSpot`` / ``LaunchOnDemand`` for a workload whose run is waiting for
  capacity: the run's market and pool are set and the run is kicked to try now;
* the same for a RUNNING workload on another market: it moves there like a
  rebalance (the migration workflow: final checkpoint, new instance, re-route);
* ``Keep``, and anything for a workload whose launch is under way: nothing.

``Stop`` is taken as ``Keep``: the product does not release a healthy instance to wait.

Idempotent: every write is a compare-and-set on a locked row (the run's payload, the
workload's state), so a tick that crashes half-way, or two ticks at once, never launch
twice: the second finds the plan already in place.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from arbitrage.logs import log_context
from placement.clouds.base import Market
from placement.egress import GB, move_cost
from placement.errors import NoPlacement
from placement.policy import Action, Keep, LaunchOnDemand, LaunchSpot, Observation, Pool, UniformProgress
from placement.selectors import blocked_pools, placement_candidates, pool_estimates
from storage.selectors import checkpoint_latest_size
from workloads.models import (
    WAITING_FOR_CAPACITY,
    RunStatus,
    WorkflowKind,
    WorkflowRun,
    Workload,
    WorkloadEvent,
    WorkloadInstance,
    WorkloadStatus,
)
from workloads.selectors import workload_current_instance_of, workload_progress
from workloads.services import workload_transition_locked
from workloads.workflows.engine import workflow_run_create, workflow_run_kick

logger = logging.getLogger(__name__)

S = WorkloadStatus
LIVE = (S.PROVISIONING, S.RUNNING, S.INTERRUPTED, S.UNHEALTHY)
POOLS_CONSIDERED = 5


@dataclass
class TickReport:
    looked_at: int = 0
    actions: dict[str, int] = field(default_factory=dict)

    def count(self, what: str) -> None:
        self.actions[what] = self.actions.get(what, 0) + 1


def pool_key(provider: str, region: str, availability_zone: str, instance_type: str) -> str:
    return f"{provider}/{region}/{availability_zone}/{instance_type}"


def _pool_of_key(key: str) -> list[str]:
    return key.split("/", 3)


def arbitrage_tick(*, now: datetime | None = None) -> TickReport:
    """One tick over every live workload (the beat task's body)."""
    now = now or timezone.now()
    report = TickReport()
    blocked = {pool_key(*pool) for pool in blocked_pools()}
    # One ranking per shape of requirements for the whole tick: a sweep of thousands of like jobs
    # asks for the same pools thousands of times.
    ranked: dict[str, tuple[list, dict]] = {}
    workloads = Workload.objects.filter(status__in=LIVE).prefetch_related("instances").order_by("created_at")
    for workload in workloads:
        report.looked_at += 1
        with log_context(workload_id=str(workload.id)):
            try:
                outcome = workload_arbitrate(workload=workload, now=now, blocked=blocked, ranked=ranked)
            except NoPlacement:
                outcome = "no-offer"
        report.count(outcome)
    return report


def checkpoint_whereabouts(workload: Workload) -> tuple[tuple[str, ...] | None, int]:
    """Where the workload's state would be read from on a move (the pool it runs in, or last ran in) and its
    size in bytes: the latest checkpoint's, or before the first one the size the customer declared."""
    instances = list(workload.instances.all())
    if not instances:
        return None, 0
    last = workload_current_instance_of(workload) or max(instances, key=lambda instance: instance.created_at)
    source = (last.provider, last.region, last.availability_zone, last.instance_type)
    size = checkpoint_latest_size(workload_id=workload.id)
    if size is None:
        declared = ((workload.config or {}).get("storage") or {}).get("checkpoint_size_gb") or 0
        size = int(Decimal(str(declared)) * GB)
    return source, size


def _ranked(requirements: dict, ranked: dict[str, tuple[list, dict]] | None) -> tuple[list, dict]:
    """The candidate pools for ``requirements`` and their estimates, from ``ranked`` when this tick has them."""
    key = json.dumps(requirements, sort_keys=True, default=str)
    if ranked is not None and key in ranked:
        return ranked[key]
    candidates = placement_candidates(requirements=requirements, limit=POOLS_CONSIDERED, honour_blocks=False)
    found = (candidates, pool_estimates(pools=[candidate.pool for candidate in candidates]))
    if ranked is not None:
        ranked[key] = found
    return found


def observation_build(
    *, workload: Workload, now: datetime, blocked: set[str], ranked: dict[str, tuple[list, dict]] | None = None
) -> Observation:
    """What the policy sees of ``workload`` now; ``ranked``: the rankings this tick made so far (shared)."""
    progress = workload_progress(workload=workload, now=now)
    instance = workload_current_instance_of(workload)
    candidates, estimates = _ranked(workload.requirements, ranked)
    source, size_bytes = checkpoint_whereabouts(workload)
    pools = tuple(
        Pool(
            key=pool_key(*candidate.pool),
            spot_price=float(candidate.spot_price),
            on_demand_price=float(candidate.on_demand_price),
            refused=pool_key(*candidate.pool) in blocked,
            expected_price=float(candidate.expected_cost_per_hour),
            egress_cost=float(move_cost(size_bytes=size_bytes, source=source, target=candidate.pool)),
            expected_lifetime=estimates[candidate.pool].expected_lifetime_seconds,
            refusal_rate=estimates[candidate.pool].refusal_rate,
        )
        for candidate in candidates
    )
    starting = workload.status != S.RUNNING or instance is None or instance.healthy_at is None
    idle_for = None
    if instance is None:
        ended = [i.terminated_at for i in workload.instances.all() if i.terminated_at is not None]
        idle_for = max((now - max([workload.created_at, *ended])).total_seconds(), 0.0)
    return Observation(
        elapsed=max((now - workload.created_at).total_seconds(), 0.0),
        progress=progress.progress_seconds,
        job_length=float(workload.expected_duration_seconds) if workload.expected_duration_seconds else None,
        deadline=(workload.deadline - workload.created_at).total_seconds() if workload.deadline else None,
        restart_overhead=float(settings.LAUNCH_OVERHEAD_SECONDS),
        market=instance.market if instance is not None else None,
        pool=pool_key(instance.provider, instance.region, instance.availability_zone, instance.instance_type)
        if instance is not None
        else None,
        starting=starting,
        preempted=False,  # interruptions are handled as they come (workloads/recovery.py)
        pools=pools,
        on_demand_allowed=workload.on_demand_fallback,
        tick=float(settings.ARBITRAGE_TICK_SECONDS),
        idle_for=idle_for,
    )


def workload_arbitrate(
    *, workload: Workload, now: datetime, blocked: set[str], ranked: dict[str, tuple[list, dict]] | None = None
) -> str:
    """Ask the policy about one workload and carry its answer out; what was done, in a word."""
    observation = observation_build(workload=workload, now=now, blocked=blocked, ranked=ranked)
    action = UniformProgress().act(observation)
    market, pool = _target(action, refused={p.key for p in observation.pools if p.refused})
    if market is None:
        return "keep"
    waiting = _waiting_run(workload)
    if waiting is not None:
        if not _run_replan(run_id=waiting.id, market=market, pool=pool):
            return "keep"
        decision_record(workload=workload, observation=observation, market=market, pool=pool, verb="launch")
        return "replan"
    if workload.status == S.RUNNING and market != observation.market:
        if not workload_move(workload_id=workload.id, market=market, pool=pool):
            return "keep"
        decision_record(workload=workload, observation=observation, market=market, pool=pool, verb="move")
        return "move"
    return "keep"


def decision_reason(*, observation: Observation, market: Market, pool: str | None, verb: str) -> str:
    """A decision in words and numbers, for the workload's timeline."""
    where = f"{market.replace('_', '-')}" + (f" in {pool}" if pool else "")
    origin = f" from {observation.market.replace('_', '-')} in {observation.pool}" if observation.market else ""
    prices = {p.key: p for p in observation.pools}
    target = prices.get(pool or "")
    parts = []
    if target is not None:
        price = target.on_demand_price if market == Market.ON_DEMAND else target.spot_price
        parts.append(f"{price:.4f} $/h" if price is not None else "price unknown")
        if target.egress_cost:
            parts.append(f"egress ${target.egress_cost:.2f}")
    refused = sum(1 for p in observation.pools if p.refused)
    if refused:
        parts.append(f"{refused} of {len(observation.pools)} spot pools refused capacity recently")
    if observation.job_length and observation.deadline:
        line = observation.elapsed * observation.job_length / observation.deadline
        ahead = observation.progress - line
        parts.append(
            f"{observation.progress:,.0f} s of {observation.job_length:,.0f} s done, "
            f"{abs(ahead):,.0f} s {'ahead of' if ahead >= 0 else 'behind'} the line to the deadline, "
            f"{max(observation.deadline - observation.elapsed, 0) / 3600:,.2f} h left"
        )
    elif observation.job_length:
        parts.append(f"{observation.progress:,.0f} s of {observation.job_length:,.0f} s done")
    verb_text = "moves" if verb == "move" else "launches"
    return f"The arbitrage policy {verb_text} it to {where}{origin}: " + "; ".join(parts) + "."


def decision_record(
    *, workload: Workload, observation: Observation, market: Market, pool: str | None, verb: str
) -> WorkloadEvent:
    message = decision_reason(observation=observation, market=market, pool=pool, verb=verb)
    logger.info("%s", message)
    return WorkloadEvent.objects.create(
        workload=workload,
        kind=WorkloadEvent.Kind.INFO,
        name="arbitrage-decision",
        message=message,
        detail={
            "market": str(market),
            "pool": pool,
            "from_market": observation.market,
            "from_pool": observation.pool,
            "progress_seconds": observation.progress,
            "elapsed_seconds": observation.elapsed,
            "job_length_seconds": observation.job_length,
            "deadline_seconds": observation.deadline,
            "pools": [
                {"pool": p.key, "spot_price": p.spot_price, "on_demand_price": p.on_demand_price, "refused": p.refused}
                for p in observation.pools
            ],
        },
    )


def _target(action: Action, *, refused: set[str]) -> tuple[Market | None, str | None]:
    """The market and pool an action asks for; (None, None) for Keep / Stop.

    A spot launch whose every pool refused capacity recently is already known to fail:
    its ``otherwise`` is what the policy wants then, so that is what is done.
    """
    if isinstance(action, LaunchSpot) and {action.pool, *action.fallbacks} <= refused:
        return _target(action.otherwise, refused=refused)
    if isinstance(action, LaunchOnDemand):
        return Market.ON_DEMAND, action.pool
    if isinstance(action, LaunchSpot):
        return Market.SPOT, action.pool
    if not isinstance(action, Keep):
        logger.debug("policy answered %s: kept as it is", type(action).__name__)
    return None, None


def _waiting_run(workload: Workload) -> WorkflowRun | None:
    """The provisioning or migration run that waits for capacity, if the workload is waiting."""
    if workload.status_reason != WAITING_FOR_CAPACITY:
        return None
    return (
        WorkflowRun.objects.filter(
            workload=workload, status=RunStatus.RUNNING, kind__in=(WorkflowKind.PROVISION, WorkflowKind.MIGRATE)
        )
        .order_by("-created_at")
        .first()
    )


def _run_replan(*, run_id: Any, market: Market, pool: str | None) -> bool:
    """Point a waiting run at ``market`` (and ``pool``); True when the market changed and it tries now.

    A new pool in the same market waits for the run's next attempt (its backoff stands).
    """
    with transaction.atomic():
        run = WorkflowRun.objects.select_for_update().get(id=run_id)
        if run.status != RunStatus.RUNNING:
            return False
        market_changed = (run.payload.get("market") or Market.SPOT) != market
        wanted_pool = _pool_of_key(pool) if pool else None
        if not market_changed and run.payload.get("pool") == wanted_pool:
            return False
        run.payload = {**run.payload, "market": str(market), "pool": wanted_pool}
        run.save(update_fields=["payload"])
    return market_changed and workflow_run_kick(run_id=run_id)


def workload_move(*, workload_id: Any, market: Market, pool: str | None) -> bool:
    """Move a RUNNING workload to ``market`` (in ``pool``) through the migration workflow, like a rebalance.

    False when it is not RUNNING any more or a move is already under way.
    """
    with transaction.atomic():
        workload = Workload.objects.select_for_update().get(id=workload_id)
        if workload.status != S.RUNNING:
            return False
        if WorkflowRun.objects.filter(workload=workload, kind=WorkflowKind.MIGRATE, status=RunStatus.RUNNING).exists():
            return False
        instance = (
            WorkloadInstance.objects.filter(workload=workload, terminated_at__isnull=True)
            .order_by("-created_at")
            .first()
        )
        reason = f"the arbitrage policy moves it to {market.replace('_', '-')}" + (f" in {pool}" if pool else "")
        workload_transition_locked(
            workload,
            "spot_interrupt",
            message=f"Moving: {reason}.",
            detail={"signal": "rebalance", "market": str(market), "pool": pool},
        )
        workflow_run_create(
            kind=WorkflowKind.MIGRATE,
            workload=workload,
            payload={
                "reason": reason,
                "signal": "rebalance",
                "market": str(market),
                "pool": _pool_of_key(pool) if pool else None,
                "exclude_pools": [],
                "from_instance": str(instance.id) if instance else None,
            },
        )
    return True
