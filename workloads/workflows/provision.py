"""The provisioning workflow: the source's ten steps, in its order.

validate-quotas, find-placement, update-status-provisioning,
provision-cloud-resources, wait-for-instance, wait-for-workload-ready,
register-routing, initialize-storage, start-health-monitoring, notify-customer.
"""

from __future__ import annotations

import hashlib
import random
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import Customer
from accounts.tokens import agent_token_for
from placement.clouds.base import (
    MANAGED_BY_TAG,
    MANAGED_BY_VALUE,
    NEXT_CANDIDATE_ERRORS,
    CapacityError,
    InstanceNotFound,
    InstanceRequest,
    InstanceState,
    Market,
    PermanentCloudError,
    TransientCloudError,
    get_cloud,
)
from placement.errors import NoPlacement
from placement.selectors import Candidate, placement_candidates
from placement.services import pool_block, pool_launch_record
from workloads import notifications, routing
from workloads.instance_status import instance_status_read
from workloads.models import (
    HealthMonitor,
    InstanceStatus,
    NotificationType,
    WorkflowKind,
    WorkflowRun,
    Workload,
    WorkloadInstance,
    WorkloadRouting,
    WorkloadStatus,
)
from workloads.services import (
    workload_capacity_found,
    workload_capacity_wait,
    workload_instances_release,
    workload_row_upsert,
    workload_transition_locked,
)
from workloads.workflows.engine import (
    NotYet,
    Poll,
    RetryPolicy,
    Rewind,
    Step,
    StepContext,
    StepFailed,
    WaitFor,
    Workflow,
    register,
    scaled,
)
from workloads.workflows.readiness import sweep_watching

S = WorkloadStatus
# States that hold (or are about to hold) capacity against the customer's quota.
CAPACITY_HOLDING = (S.PROVISIONING, S.RUNNING, S.STOPPING, S.INTERRUPTED, S.UNHEALTHY)
MAX_PRICE_BUFFER = Decimal("1.1")
CANDIDATES_TRIED = 5
HEALTH_TIMEOUT_SECONDS = 3


# 1 ---------------------------------------------------------------------------------


def validate_quotas(ctx: StepContext) -> dict[str, Any]:
    """Reserve one of the customer's concurrent-workload slots, under a lock on the customer.

    Counting only RUNNING workloads (as the source does) lets parallel
    provisions overshoot; this counts every workload that holds or is about
    to hold capacity, including PENDING ones that already passed this step.
    """
    outcome: dict[str, Any] = {}

    def reserve() -> None:
        customer = Customer.objects.select_for_update().get(id=ctx.workload.customer_id)
        held = (
            Workload.objects.filter(customer=customer)
            .exclude(id=ctx.workload.id)
            .filter(Q(status__in=CAPACITY_HOLDING) | Q(status=S.PENDING, capacity_reserved_at__isnull=False))
            .count()
        )
        if held >= customer.max_concurrent_workloads:
            raise StepFailed(f"Quota exceeded: max {customer.max_concurrent_workloads} concurrent workloads")
        workload = ctx.workload_for_update()
        workload.capacity_reserved_at = timezone.now()
        ctx.workload_save(["capacity_reserved_at"])
        outcome.update(active=held, limit=customer.max_concurrent_workloads)

    ctx.on_commit_effects(reserve)
    return outcome


# 2 ---------------------------------------------------------------------------------


def find_placement(ctx: StepContext) -> dict[str, Any]:
    """The ranked candidates; none (every pool blocked) is not a failure: provisioning then waits."""
    try:
        return {"candidates": [candidate.as_dict() for candidate in _candidates(ctx, exclude=True)]}
    except CapacityUnavailable:
        return {"candidates": []}


class CapacityUnavailable(Exception):
    """Offers fit, but every one is in a pool blocked after a refusal or an interruption: wait."""


def _market(ctx: StepContext) -> Market:
    """The market this run launches in: spot, unless the controller asked for on demand."""
    return Market(ctx.payload.get("market") or Market.SPOT)


def _candidates(ctx: StepContext, *, exclude: bool) -> list[Candidate]:
    """Fresh candidates for this run's market, the pool the controller asked for first.

    ``exclude``: skip the pools the run was told to avoid (the one it was interrupted
    in); only on the first try, since blocks already cover the cool-down and a
    workload that fits in one pool only must get back to it eventually.
    """
    market = _market(ctx)
    excluded = [tuple(pool) for pool in ctx.payload.get("exclude_pools", [])] if exclude else []
    try:
        candidates = placement_candidates(
            requirements=ctx.workload.requirements,
            limit=CANDIDATES_TRIED,
            exclude_pools=excluded,
            honour_blocks=market == Market.SPOT,
        )
    except NoPlacement as none:
        if none.requirement == "pool_blocks":
            raise CapacityUnavailable(none.message) from None
        raise StepFailed(f"No placement: {none.message}") from None
    if market == Market.ON_DEMAND:
        candidates.sort(key=lambda candidate: candidate.on_demand_price)
    wanted = tuple(ctx.payload.get("pool") or ())
    candidates.sort(key=lambda candidate: candidate.pool != wanted)  # stable: the rest keep their order
    return candidates


def capacity_backoff(attempt: int) -> float:
    """Seconds until the next try after ``attempt`` tries found no capacity: doubling, capped, jittered."""
    first, cap = settings.CAPACITY_RETRY_FIRST_SECONDS, settings.CAPACITY_RETRY_MAX_SECONDS
    delay = min(first * 2 ** max(attempt - 1, 0), cap)
    # Jitter spreads workloads refused in the same crunch, so they do not all come back at once.
    return scaled(delay * random.uniform(0.8, 1.0))


def _wait_for_capacity(ctx: StepContext, reason: str) -> WaitFor:
    countdown = capacity_backoff(ctx.attempt)
    next_attempt_at = timezone.now() + timedelta(seconds=countdown)
    workload_capacity_wait(
        workload_id=ctx.workload.id,
        next_attempt_at=next_attempt_at,
        detail={"run_id": str(ctx.run.id), "market": _market(ctx), "reason": reason},
    )
    return WaitFor(f"waiting for capacity: {reason}", countdown=countdown)


# 3 ---------------------------------------------------------------------------------


def update_status_provisioning(ctx: StepContext) -> dict[str, Any]:
    def move() -> None:
        workload = ctx.workload_for_update()
        if workload.status == S.PENDING:
            workload_transition_locked(
                workload,
                "place",
                message="Placement found.",
                events=ctx.events,
                save=ctx.workload_save,
                started_at=timezone.now(),
            )

    ctx.on_commit_effects(move)
    return {"status": S.PROVISIONING}


# 4 ---------------------------------------------------------------------------------


def _idempotency_token(run: WorkflowRun, candidate: Candidate, *, market: Market = Market.SPOT) -> str:
    """Same run + same pool + same market → same token: a retried create finds its instance."""
    pool = f"{candidate.provider}/{candidate.region}/{candidate.availability_zone}/{candidate.instance_type}"
    key = f"{run.id}:{pool}" if market == Market.SPOT else f"{run.id}:{pool}:{market}"
    return "ca-" + hashlib.sha256(key.encode()).hexdigest()[:32]


def _instance_request(ctx: StepContext, candidate: Candidate, *, market: Market = Market.SPOT) -> InstanceRequest:
    workload, config = ctx.workload, ctx.workload.config
    max_price = (candidate.spot_price * MAX_PRICE_BUFFER).quantize(Decimal("0.000001"), ROUND_HALF_UP)
    return InstanceRequest(
        idempotency_token=_idempotency_token(ctx.run, candidate, market=market),
        market=market,
        region=candidate.region,
        availability_zone=candidate.availability_zone,
        instance_type=candidate.instance_type,
        max_price_per_hour=max_price,
        tags={
            "workload-id": str(workload.id),
            "customer-id": str(workload.customer_id),
            MANAGED_BY_TAG: MANAGED_BY_VALUE,
        },
        image_id=config.get("image_id", ""),
        command=tuple(config.get("command", ())),
        env={
            **config.get("env", {}),
            # How the workload's own agent reaches the API (checkpoints, interruption reports).
            "ARBITRAGE_API_URL": settings.PUBLIC_API_URL,
            "WORKLOAD_AGENT_TOKEN": agent_token_for(workload.id),
            "WORKLOAD_STORAGE_ENABLED": "1" if (config.get("storage") or {}).get("enabled") else "0",
        },
        health_check_port=config.get("health_check_port", 8080),
    )


def provision_cloud_resources(ctx: StepContext) -> dict[str, Any]:
    """Create the instance, in the run's market, on the best candidate that has capacity.

    "No capacity", "quota exceeded" and "price too low" block that pool for a
    cool-down and move on to the next candidate; when none is left the workload
    waits for capacity (``WaitFor`` with a backoff) and tries again with fresh
    candidates, as long as it takes. Transient errors are retried by the step's
    policy; permanent ones fail the workload.
    """
    market = _market(ctx)
    if ctx.attempt == 1 and not ctx.payload.get("pool") and market == Market.SPOT:
        candidates = [Candidate.from_dict(item) for item in ctx.result_of("find-placement")["candidates"]]
    else:
        try:
            candidates = _candidates(ctx, exclude=False)
        except CapacityUnavailable as blocked:
            raise _wait_for_capacity(ctx, blocked.args[0]) from None
    skipped: list[dict[str, str]] = []
    for candidate in candidates:
        cloud = get_cloud(candidate.provider)
        try:
            info = cloud.create_instance(_instance_request(ctx, candidate, market=market))
        except NEXT_CANDIDATE_ERRORS as refused:
            pool_block(
                provider=candidate.provider,
                region=candidate.region,
                availability_zone=candidate.availability_zone,
                instance_type=candidate.instance_type,
                reason=f"{type(refused).__name__}: {refused.message}",
            )
            pool_launch_record(pool=candidate.pool, market=market, refused=isinstance(refused, CapacityError))
            skipped.append({"pool": _pool_name(candidate), "error": refused.message})
            continue
        except PermanentCloudError as error:
            raise StepFailed(f"{candidate.provider} refused the instance: {error.message}") from None

        # On demand, it is bought at the on-demand price: that is what it is billed at.
        bought_at = candidate.on_demand_price if market == Market.ON_DEMAND else candidate.spot_price

        def record(candidate=candidate, info=info, bought_at=bought_at) -> None:
            workload = ctx.workload_for_update()
            # Under the workload's lock: no other writer makes this workload's instance rows meanwhile.
            known = WorkloadInstance.objects.filter(
                workload_id=workload.id, provider=candidate.provider, instance_id=info.instance_id
            ).exists()
            if not known:
                WorkloadInstance.objects.create(
                    workload_id=workload.id,
                    provider=candidate.provider,
                    instance_id=info.instance_id,
                    region=candidate.region,
                    availability_zone=candidate.availability_zone,
                    instance_type=candidate.instance_type,
                    market=market,
                    spot_price=bought_at,
                    on_demand_price=candidate.on_demand_price,
                    status=InstanceStatus.PENDING,
                    # Whatever delayed this row (a worker killed after the create), the bill starts at the launch.
                    launched_at=info.launched_at,
                )
            workload_capacity_found(workload=workload)
            pool_launch_record(pool=candidate.pool, market=market, refused=False)

        ctx.on_commit_effects(record)
        return {
            "instance_id": info.instance_id,
            "provider": candidate.provider,
            "region": candidate.region,
            "operation": info.operation,
            "launched_at_known": info.launched_at is not None,
            "market": market,
            "placement": candidate.as_dict(),
            "skipped": skipped,
        }
    tried = "; ".join(f"{item['pool']}: {item['error']}" for item in skipped) or "every pool is blocked"
    raise _wait_for_capacity(ctx, f"no capacity in any candidate pool ({tried})")


def _undo_create(ctx: StepContext, result: dict[str, Any] | None) -> None:
    """The run was cancelled while the create was in flight: don't leave the instance behind."""
    if result:
        get_cloud(result["provider"]).terminate_instance(result["instance_id"], result["region"])


def _pool_name(candidate: Candidate) -> str:
    return f"{candidate.provider}/{candidate.region}/{candidate.availability_zone}/{candidate.instance_type}"


# 5 ---------------------------------------------------------------------------------


def wait_for_instance(ctx: StepContext) -> dict[str, Any]:
    created = ctx.result_of("provision-cloud-resources")
    try:
        info = instance_status_read(
            provider=created["provider"],
            region=created["region"],
            instance_id=created["instance_id"],
            operation=created.get("operation", ""),
        )
    except TransientCloudError as error:
        raise NotYet(f"status unavailable: {error.message}") from None
    except InstanceNotFound:
        raise StepFailed("Instance failed to start: it no longer exists") from None
    except NEXT_CANDIDATE_ERRORS as refused:
        # The cloud accepted the create, then its operation found no capacity (GCP, Azure).
        pool = _pool_name(Candidate.from_dict(created["placement"]))
        raise Rewind(
            "find-placement", f"{pool}: {refused.message}", effect=_abandon_create(ctx, created, refused)
        ) from None
    except PermanentCloudError as error:
        raise StepFailed(f"{created['provider']} refused the instance: {error.message}") from None
    if info.state == InstanceState.RUNNING:
        # A create answered by an operation may not have said when the instance launched.
        if info.launched_at is not None and not created.get("launched_at_known"):
            launched_at = info.launched_at
            ctx.on_commit_effects(
                lambda: WorkloadInstance.objects.filter(
                    workload_id=ctx.workload.id, instance_id=created["instance_id"], launched_at__isnull=True
                ).update(launched_at=launched_at)
            )
        port = ctx.workload.config.get("health_check_port", 8080)
        return {"public_ip": info.public_ip, "address": info.address(port)}
    if info.state == InstanceState.PREEMPTED:
        # Reclaimed while it booted: an interruption like any other. Block the pool, place again.
        reason = f"preempted while starting{f' ({info.state_reason})' if info.state_reason else ''}"
        pool = _pool_name(Candidate.from_dict(created["placement"]))
        raise Rewind("find-placement", f"{pool}: {reason}", effect=_abandon_create(ctx, created, reason))
    if info.state in (InstanceState.TERMINATED, InstanceState.FAILED):
        reason = f" ({info.state_reason})" if info.state_reason else ""
        raise StepFailed(f"Instance failed to start: {info.state}{reason}")
    # Without an operation to follow, the readiness sweep reads this instance with the others starting.
    swept = not created.get("operation") and get_cloud(created["provider"]).describes_in_batches and sweep_watching()
    raise NotYet(f"instance is {info.state}", swept=swept)


def _abandon_create(ctx: StepContext, created: dict[str, Any], refused: Exception | str) -> Callable[[], None]:
    """Block the refused pool and remove what the failed create left (Azure keeps a failed VM resource).

    Returns the rewind's database effect: the instance row goes (in the rewind's transaction,
    after the create's own record when both ran in one task).
    """
    placement = created["placement"]
    pool_block(
        provider=placement["provider"],
        region=placement["region"],
        availability_zone=placement["availability_zone"],
        instance_type=placement["instance_type"],
        reason=refused if isinstance(refused, str) else f"{type(refused).__name__}: {refused}",
    )
    get_cloud(created["provider"]).terminate_instance(created["instance_id"], created["region"])

    def forget() -> None:
        # The capacity was never allocated: no segment to bill (the rewind event keeps the record).
        WorkloadInstance.objects.filter(
            workload_id=ctx.workload.id, instance_id=created["instance_id"], usage_record__isnull=True
        ).delete()

    return forget


# 6 ---------------------------------------------------------------------------------


def wait_for_workload_ready(ctx: StepContext) -> dict[str, Any]:
    address = ctx.result_of("wait-for-instance")["address"]
    url = f"http://{address}/health"
    try:
        with urllib.request.urlopen(url, timeout=HEALTH_TIMEOUT_SECONDS) as response:
            return {"health_url": url, "status": response.status}
    except urllib.error.HTTPError as error:
        raise NotYet(f"GET {url} answered {error.code}", swept=sweep_watching()) from None
    except (urllib.error.URLError, OSError) as error:
        raise NotYet(f"GET {url} failed: {getattr(error, 'reason', error)}", swept=sweep_watching()) from None


# 7 ---------------------------------------------------------------------------------


def register_routing(ctx: StepContext) -> dict[str, Any]:
    created = ctx.result_of("provision-cloud-resources")
    ready = ctx.result_of("wait-for-instance")
    workload_id = ctx.workload.id

    def register() -> None:
        workload = ctx.workload_for_update()
        workload_row_upsert(
            model=WorkloadRouting,
            workload=workload,
            values={
                "endpoint": ready["address"],
                "provider": created["provider"],
                "region": created["region"],
                "instance_id": created["instance_id"],
                "updated_at": timezone.now(),
            },
        )
        WorkloadInstance.objects.filter(workload_id=workload_id, instance_id=created["instance_id"]).update(
            status=InstanceStatus.RUNNING, public_ip=ready["public_ip"], healthy_at=timezone.now()
        )
        workload_transition_locked(workload, "mark_ready", message=f"Running at {ready['address']}.", events=ctx.events)
        address = ready["address"]
        transaction.on_commit(lambda: routing.kv_set_endpoint(workload_id=workload_id, endpoint=address))

    ctx.on_commit_effects(register)
    return {"endpoint": ready["address"], "status": S.RUNNING}


# 8 ---------------------------------------------------------------------------------


def initialize_storage(ctx: StepContext) -> dict[str, Any]:
    from storage.services import storage_initialize

    storage = ctx.workload.config.get("storage") or {}
    if not storage.get("enabled"):
        return {"enabled": False}
    quota_bytes = int(storage.get("quota_gb", 10)) * 1024**3
    retention_days = int(storage.get("retention_days", 30))
    ctx.on_commit_effects(
        lambda: storage_initialize(workload_id=ctx.workload.id, quota_bytes=quota_bytes, retention_days=retention_days)
    )
    return {"enabled": True, "quota_bytes": quota_bytes, "retention_days": retention_days}


# 9 ---------------------------------------------------------------------------------


def start_health_monitoring(ctx: StepContext) -> dict[str, Any]:
    created = ctx.result_of("provision-cloud-resources")
    ready = ctx.result_of("wait-for-instance")
    port = ctx.workload.config.get("health_check_port", 8080)
    ctx.on_commit_effects(
        lambda: workload_row_upsert(
            model=HealthMonitor,
            workload=ctx.workload_for_update(),
            values={
                "active": True,
                "instance_id": created["instance_id"],
                "provider": created["provider"],
                "region": created["region"],
                "endpoint": ready["address"],
                "health_check_port": port,
                "consecutive_failures": 0,
                "stopped_at": None,
            },
        )
    )
    return {"endpoint": ready["address"]}


# 10 --------------------------------------------------------------------------------


def notify_customer(ctx: StepContext) -> dict[str, Any]:
    placement = ctx.result_of("provision-cloud-resources")["placement"]
    payload = notifications.workload_ready_payload(workload=ctx.workload, placement=placement)
    ctx.on_commit_effects(
        lambda: notifications.notification_create(
            workload=ctx.workload,
            type=NotificationType.WORKLOAD_READY,
            payload=payload,
            dedupe_key=str(ctx.run.id),
            # The step's record happens once per run (its claim): no notification of this run yet.
            first_time=True,
        )
    )
    return payload


# when a run gives up -----------------------------------------------------------------


def provision_cleanup(run: WorkflowRun) -> None:
    """Nothing left running and billed: terminate what the run made, drop routing, fail the workload."""
    workload_instances_release(workload_id=run.workload_id, reason=f"provisioning gave up: {run.error}")
    with transaction.atomic():
        workload = Workload.objects.select_for_update().get(id=run.workload_id)
        transition = {S.PENDING: "reject", S.PROVISIONING: "fail_provisioning"}.get(workload.status)
        if transition is None:
            return  # cancelled or otherwise moved on: its own workflow finishes it
        workload_transition_locked(
            workload,
            transition,
            message=run.error,
            detail={"run_id": str(run.id), "failed_step": run.failed_step},
            failure_reason=run.error,
        )
        notifications.notification_create(
            workload=workload,
            type=NotificationType.WORKLOAD_FAILED,
            payload=notifications.workload_failed_payload(
                workload=workload, failed_step=run.failed_step, reason=run.error
            ),
            dedupe_key=str(run.id),
        )


def _wait(message: str) -> Poll:
    # Swept (readiness.py wakes the run as soon as the instance is up or answers): its own re-check
    # is the slower fallback, within the same five minutes.
    return Poll(
        every_seconds=5, max_checks=60, timeout_message=message, swept_every_seconds=settings.READINESS_POLL_SECONDS
    )


# The steps, named once: the provisioning run is all of them; a migration reuses some (migrate.py).
VALIDATE_QUOTAS = Step("validate-quotas", validate_quotas)
FIND_PLACEMENT = Step("find-placement", find_placement, follows=True)
UPDATE_STATUS_PROVISIONING = Step("update-status-provisioning", update_status_provisioning, follows=True)
PROVISION_CLOUD_RESOURCES = Step(
    "provision-cloud-resources",
    provision_cloud_resources,
    retry=RetryPolicy(limit=3, delay_seconds=10, exponential=True, retry_on=(TransientCloudError,)),
    compensate=_undo_create,
    # In the task of find-placement, once the placement is recorded: a create retried after a
    # crash goes to the same pool with the same token.
    inline=True,
)
WAIT_FOR_INSTANCE = Step(
    "wait-for-instance", wait_for_instance, poll=_wait("Timeout waiting for instance to start"), follows=True
)
WAIT_FOR_WORKLOAD_READY = Step(
    "wait-for-workload-ready",
    wait_for_workload_ready,
    poll=_wait("Timeout waiting for workload health check"),
    follows=True,
)
REGISTER_ROUTING = Step("register-routing", register_routing, follows=True)
INITIALIZE_STORAGE = Step("initialize-storage", initialize_storage, follows=True)
START_HEALTH_MONITORING = Step("start-health-monitoring", start_health_monitoring, follows=True)
NOTIFY_CUSTOMER = Step("notify-customer", notify_customer, follows=True)

STEPS = (
    VALIDATE_QUOTAS,
    FIND_PLACEMENT,
    UPDATE_STATUS_PROVISIONING,
    PROVISION_CLOUD_RESOURCES,
    WAIT_FOR_INSTANCE,
    WAIT_FOR_WORKLOAD_READY,
    REGISTER_ROUTING,
    INITIALIZE_STORAGE,
    START_HEALTH_MONITORING,
    NOTIFY_CUSTOMER,
)

PROVISION = register(Workflow(kind=WorkflowKind.PROVISION, steps=STEPS, cleanup=provision_cleanup))
