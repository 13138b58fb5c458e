"""A durable step engine on Celery (docs/architecture.md §6).

A workflow is an ordered tuple of named steps. A run of it is a
``WorkflowRun`` row with one ``WorkflowStep`` row per step, and a Celery
``chain`` of one immutable ``workflow_step.si(run_id, name, generation)``
signature per step. Executing a step:

1. A step that already succeeded is never run again: its stored result is
   returned, so a resumed or duplicated chain passes over it.
2. The step body runs outside any transaction (cloud calls and HTTP checks
   must not hold database locks). It returns a JSON result and registers its
   database effects with ``ctx.on_commit_effects``.
3. The effects and the step's result are then written in ONE transaction,
   with the run row locked. If the run was cancelled or failed meanwhile,
   nothing is written and the step's ``compensate`` undoes its outside effect.

A body raises ``NotYet`` to be re-checked later (a wait: the task is retried
with a countdown, never sleeping in a worker), ``StepFailed`` to give up, or
one of its retry policy's exceptions to be retried with backoff. When a run
gives up, the workflow's cleanup runs in its own task.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from uuid import UUID

from celery import chain, current_app
from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import F
from django.utils import timezone

from arbitrage.errors import DomainError
from arbitrage.logs import log_context, log_context_bind
from workloads.models import (
    RunStatus,
    StepStatus,
    WorkflowRun,
    WorkflowStep,
    Workload,
    WorkloadEvent,
)

# Celery task names (defined in workloads/tasks.py).
STEP_TASK = "workloads.workflow_step"
CLEANUP_TASK = "workloads.workflow_cleanup"

logger = logging.getLogger(__name__)


# --- what a step body can raise --------------------------------------------------


class NotYet(Exception):
    """The awaited condition does not hold yet: check again after the poll interval."""


class WaitFor(Exception):
    """Not possible now (e.g. no pool has capacity): run this step again after ``countdown`` seconds.

    Unlike ``NotYet`` it has no limit on checks: the run waits as long as it takes,
    without holding a worker. The stall detector counts from the next attempt.
    """

    def __init__(self, reason: str, *, countdown: float) -> None:
        super().__init__(reason)
        self.countdown = countdown


class StepFailed(Exception):
    """Give up the run with this message (the workload's failure reason)."""


class Rewind(Exception):
    """Go back to an earlier step and run the workflow on from there.

    Raised when an outcome seen late voids earlier results: a cloud that
    accepted a create and then reported "no capacity" from its operation sends
    the run back to find-placement, which now skips the blocked pool.
    """

    def __init__(self, to_step: str, reason: str) -> None:
        super().__init__(reason)
        self.to_step = to_step
        self.reason = reason


#: A run goes back at most this many times. Each rewind blocks a pool (a late capacity refusal, or a
#: preemption while booting) and waits for capacity when none is left, so this only stops a loop.
MAX_REWINDS = 50


class _RunStopped(Exception):
    """The run was cancelled or failed while this step was running."""


# --- definitions ---------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Retry the named exceptions ``limit`` times after the first attempt."""

    limit: int
    delay_seconds: float
    exponential: bool = False
    retry_on: tuple[type[BaseException], ...] = ()

    def countdown(self, attempt: int) -> float:
        factor = 2 ** (attempt - 1) if self.exponential else 1
        return scaled(self.delay_seconds * factor)


@dataclass(frozen=True)
class Poll:
    """A wait: re-check every ``every_seconds``, at most ``max_checks`` times."""

    every_seconds: float = 5
    max_checks: int = 60
    timeout_message: str = "Timeout"


# Database hiccups (a lock timeout, a dropped connection) are retried for every step.
DATABASE_RETRY = RetryPolicy(limit=5, delay_seconds=2, exponential=True, retry_on=(DatabaseError,))


@dataclass(frozen=True)
class Step:
    name: str
    body: Callable[[StepContext], Any]
    retry: RetryPolicy | None = None
    poll: Poll | None = None
    compensate: Callable[[StepContext, Any], None] | None = None


@dataclass(frozen=True)
class Workflow:
    kind: str
    steps: tuple[Step, ...]
    # Runs (in its own task) after the run gave up; must be idempotent.
    cleanup: Callable[[WorkflowRun], None] | None = None

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(f"{self.kind} has no step {name!r}")

    @property
    def step_names(self) -> tuple[str, ...]:
        return tuple(step.name for step in self.steps)


WORKFLOWS: dict[str, Workflow] = {}


def register(workflow: Workflow) -> Workflow:
    WORKFLOWS[workflow.kind] = workflow
    return workflow


def scaled(seconds: float) -> float:
    """Every workflow delay times ``WORKFLOW_TIME_SCALE`` (1 in production)."""
    return seconds * settings.WORKFLOW_TIME_SCALE


@dataclass
class StepContext:
    run: WorkflowRun
    workload: Workload
    step: WorkflowStep
    effects: list[Callable[[], None]] = field(default_factory=list)

    @property
    def attempt(self) -> int:
        return self.step.attempts

    @property
    def payload(self) -> dict[str, Any]:
        return self.run.payload

    def result_of(self, step_name: str) -> Any:
        return WorkflowStep.objects.values_list("result", flat=True).get(run=self.run, name=step_name)

    def on_commit_effects(self, effect: Callable[[], None]) -> None:
        """Run ``effect`` in the transaction that records this step's result."""
        self.effects.append(effect)


# --- outcomes the Celery task acts on ---------------------------------------------------


@dataclass(frozen=True)
class Done:
    result: Any


@dataclass(frozen=True)
class RetryLater:
    countdown: float


@dataclass(frozen=True)
class Stop:
    reason: str


Outcome = Done | RetryLater | Stop


# --- starting and resuming runs ----------------------------------------------------------


def _lock_run(run_id: UUID | str, workload_id: UUID | str) -> WorkflowRun:
    """Lock the run's workload row, then the run: the order every writer takes them in.

    A terminate or an interrupt locks the workload and then cancels or starts
    runs; a step recording its result writes workload events (a foreign key: a
    share lock on the workload) and may move the workload. Taking the runs first
    here would deadlock with them on PostgreSQL.
    """
    list(Workload.objects.select_for_update().filter(pk=workload_id).values_list("pk", flat=True))
    return WorkflowRun.objects.select_for_update().get(pk=run_id)


def workflow_run_create(*, kind: str, workload: Workload, payload: dict[str, Any] | None = None) -> WorkflowRun:
    """Create a run and its step rows, and enqueue its chain when the transaction commits."""
    workflow = WORKFLOWS[kind]
    run = WorkflowRun.objects.create(kind=kind, workload=workload, payload=payload or {})
    WorkflowStep.objects.bulk_create(
        WorkflowStep(run=run, name=name, position=position) for position, name in enumerate(workflow.step_names, 1)
    )
    transaction.on_commit(lambda: _enqueue_chain(run.id, workflow.step_names, run.chain_generation))
    return run


def _enqueue_chain(run_id: UUID, step_names: tuple[str, ...], generation: int) -> None:
    # The tasks module imports this one, so its tasks are named here, not imported.
    if step_names:
        steps = (
            current_app.signature(STEP_TASK, args=(str(run_id), name, generation), immutable=True)
            for name in step_names
        )
        chain(*steps).apply_async()


def workflow_resume_stalled(*, stalled_for: timedelta | None = None) -> list[UUID]:
    """Re-enqueue the chains of running runs no task has touched for ``stalled_for``.

    A chain is lost when a worker dies holding its message, or the broker
    restarts without it. The new chain starts at the first unfinished step;
    tasks of the old chain see the bumped generation and stop.
    """
    if stalled_for is None:
        stalled_for = timedelta(seconds=scaled(settings.WORKFLOW_STALL_SECONDS))
    cutoff = timezone.now() - stalled_for
    resumed = []
    for run_id, workload_id in WorkflowRun.objects.filter(
        status=RunStatus.RUNNING, heartbeat_at__lte=cutoff
    ).values_list("id", "workload_id"):
        with transaction.atomic():
            run = _lock_run(run_id, workload_id)
            if run.status != RunStatus.RUNNING or run.heartbeat_at > cutoff:
                continue
            run.chain_generation += 1
            run.heartbeat_at = timezone.now()
            run.save(update_fields=["chain_generation", "heartbeat_at"])
            remaining = tuple(
                run.steps.exclude(status=StepStatus.SUCCEEDED).order_by("position").values_list("name", flat=True)
            )
            WorkloadEvent.objects.create(
                workload_id=run.workload_id,
                kind=WorkloadEvent.Kind.INFO,
                name="workflow-resumed",
                message=f"{run.kind} run resumed at {remaining[0] if remaining else 'its end'}",
                detail={"run_id": str(run.id), "generation": run.chain_generation},
            )
            if not remaining:
                _finish_run(run)
            generation = run.chain_generation
            transaction.on_commit(lambda r=run.id, n=remaining, g=generation: _enqueue_chain(r, n, g))
        resumed.append(run_id)
    return resumed


def workflow_run_kick(*, run_id: UUID | str) -> bool:
    """Run a waiting run's unfinished steps now instead of at its next attempt (the controller changed its plan).

    A new chain from the first unfinished step, with a bumped generation so the waiting
    task of the old chain stops; False when the run is not running.
    """
    with transaction.atomic():
        run = WorkflowRun.objects.select_for_update().filter(id=run_id, status=RunStatus.RUNNING).first()
        if run is None:
            return False
        run.chain_generation += 1
        run.heartbeat_at = timezone.now()
        run.save(update_fields=["chain_generation", "heartbeat_at"])
        remaining = tuple(
            run.steps.exclude(status=StepStatus.SUCCEEDED).order_by("position").values_list("name", flat=True)
        )
        generation = run.chain_generation
        transaction.on_commit(lambda: _enqueue_chain(run.id, remaining, generation))
    return True


def workflow_run_cancel(*, workload_id: UUID | str, kind: str, reason: str) -> list[UUID]:
    """Cancel a workload's running runs of ``kind``; call inside the caller's transaction."""
    cancelled = list(
        WorkflowRun.objects.select_for_update()
        .filter(workload_id=workload_id, kind=kind, status=RunStatus.RUNNING)
        .values_list("id", flat=True)
    )
    WorkflowRun.objects.filter(id__in=cancelled).update(
        status=RunStatus.CANCELLED, error=reason, finished_at=timezone.now()
    )
    return cancelled


# --- executing one step ------------------------------------------------------------


def workflow_step_execute(*, run_id: UUID | str, step_name: str, generation: int) -> Outcome:
    # Every log line of the step names its run, step, workload and kind (arbitrage.logs).
    with log_context(run_id=run_id, step=step_name):
        return _step_execute(run_id=run_id, step_name=step_name, generation=generation)


def _step_execute(*, run_id: UUID | str, step_name: str, generation: int) -> Outcome:
    run = WorkflowRun.objects.select_related("workload").filter(id=run_id).first()
    if run is None:
        return Stop("no such run")
    log_context_bind(workload_id=run.workload_id, kind=run.kind)
    if run.chain_generation != generation:
        return Stop("superseded by a resumed chain")
    if run.status != RunStatus.RUNNING:
        return Stop(f"run is {run.status}")
    definition = WORKFLOWS[run.kind].step(step_name)
    step = WorkflowStep.objects.get(run=run, name=step_name)
    if step.status == StepStatus.SUCCEEDED:
        return Done(step.result)

    now = timezone.now()
    with transaction.atomic():
        WorkflowStep.objects.filter(pk=step.pk).update(
            status=StepStatus.RUNNING, attempts=F("attempts") + 1, started_at=step.started_at or now
        )
        WorkflowRun.objects.filter(pk=run.pk).update(heartbeat_at=now)
    step.status, step.attempts, step.started_at = StepStatus.RUNNING, step.attempts + 1, step.started_at or now
    ctx = StepContext(run=run, workload=run.workload, step=step)

    try:
        result = definition.body(ctx)
        return _record_success(ctx, definition, result)
    except NotYet as waiting:
        poll = definition.poll or Poll()
        if step.attempts >= poll.max_checks:
            return _give_up(run, step_name, f"{poll.timeout_message} ({waiting})")
        WorkflowStep.objects.filter(pk=step.pk).update(error=str(waiting))
        return RetryLater(scaled(poll.every_seconds))
    except WaitFor as waiting:
        WorkflowStep.objects.filter(pk=step.pk).update(error=str(waiting))
        WorkflowRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() + timedelta(seconds=waiting.countdown))
        return RetryLater(waiting.countdown)
    except StepFailed as failure:
        return _give_up(run, step_name, str(failure))
    except Rewind as rewind:
        return _rewind(run, step_name, rewind)
    except DomainError as refused:
        # e.g. a transition refused because the workload moved on meanwhile.
        return _give_up(run, step_name, refused.message)
    except Exception as error:
        for policy in (definition.retry, DATABASE_RETRY):
            if policy is not None and isinstance(error, policy.retry_on):
                if step.attempts <= policy.limit:
                    WorkflowStep.objects.filter(pk=step.pk).update(error=f"{type(error).__name__}: {error}")
                    return RetryLater(policy.countdown(step.attempts))
                return _give_up(run, step_name, f"{error} (after {step.attempts} attempts)")
        logger.exception("step %s of run %s failed unexpectedly", step_name, run.id)
        return _give_up(run, step_name, f"internal error in {step_name}: {type(error).__name__}: {error}")


def _record_success(ctx: StepContext, definition: Step, result: Any) -> Outcome:
    try:
        with transaction.atomic():
            run = _lock_run(ctx.run.pk, ctx.run.workload_id)
            if run.status != RunStatus.RUNNING:
                raise _RunStopped
            step = WorkflowStep.objects.select_for_update().get(pk=ctx.step.pk)
            if step.status == StepStatus.SUCCEEDED:
                return Done(step.result)  # a duplicate chain recorded it first
            for effect in ctx.effects:
                effect()
            finished = timezone.now()
            step.status = StepStatus.SUCCEEDED
            step.result = result
            step.error = ""
            step.finished_at = finished
            step.save(update_fields=["status", "result", "error", "finished_at"])
            WorkloadEvent.objects.create(
                workload_id=run.workload_id,
                kind=WorkloadEvent.Kind.STEP,
                name=step.name,
                message=f"{run.kind}: {step.name} done",
                detail={
                    "run_id": str(run.id),
                    "attempts": step.attempts,
                    "seconds": round((finished - step.started_at).total_seconds(), 3),
                },
            )
            run.heartbeat_at = finished
            run.save(update_fields=["heartbeat_at"])
            if not run.steps.exclude(status=StepStatus.SUCCEEDED).exists():
                _finish_run(run)
    except _RunStopped:
        if definition.compensate is not None:
            definition.compensate(ctx, result)
        return Stop("run stopped while the step ran")
    return Done(result)


def _finish_run(run: WorkflowRun) -> None:
    run.status = RunStatus.SUCCEEDED
    run.finished_at = timezone.now()
    run.save(update_fields=["status", "finished_at"])


def _give_up(run: WorkflowRun, step_name: str, error: str) -> Stop:
    """Fail the run at ``step_name`` and schedule the workflow's cleanup."""
    with transaction.atomic():
        locked = _lock_run(run.pk, run.workload_id)
        if locked.status != RunStatus.RUNNING:
            return Stop(f"run is {locked.status}")
        now = timezone.now()
        locked.status = RunStatus.FAILED
        locked.failed_step = step_name
        locked.error = error
        locked.finished_at = now
        locked.save(update_fields=["status", "failed_step", "error", "finished_at"])
        WorkflowStep.objects.filter(run=locked, name=step_name).update(
            status=StepStatus.FAILED, error=error, finished_at=now
        )
        WorkloadEvent.objects.create(
            workload_id=locked.workload_id,
            kind=WorkloadEvent.Kind.STEP,
            name=step_name,
            message=f"{locked.kind}: {step_name} gave up: {error}",
            detail={"run_id": str(locked.id), "failed": True},
        )
        if WORKFLOWS[locked.kind].cleanup is not None:
            transaction.on_commit(lambda: _enqueue_cleanup(locked.id))
    logger.warning("%s run %s gave up at %s: %s", run.kind, run.id, step_name, error)
    return Stop(error)


def _rewind(run: WorkflowRun, step_name: str, rewind: Rewind) -> Stop:
    """Reset ``rewind.to_step`` and every later step, and enqueue a new chain from there."""
    workflow = WORKFLOWS[run.kind]
    with transaction.atomic():
        locked = _lock_run(run.pk, run.workload_id)
        if locked.status != RunStatus.RUNNING:
            return Stop(f"run is {locked.status}")
        rewinds = int(locked.payload.get("rewinds", 0)) + 1
        if rewinds > MAX_REWINDS:
            return _give_up(locked, step_name, f"{rewind.reason} (gave up after {MAX_REWINDS} fresh placements)")
        target = WorkflowStep.objects.get(run=locked, name=rewind.to_step)
        WorkflowStep.objects.filter(run=locked, position__gte=target.position).update(
            status=StepStatus.PENDING, result=None, error="", attempts=0, started_at=None, finished_at=None
        )
        locked.payload = {**locked.payload, "rewinds": rewinds}
        locked.chain_generation += 1
        locked.heartbeat_at = timezone.now()
        locked.save(update_fields=["payload", "chain_generation", "heartbeat_at"])
        WorkloadEvent.objects.create(
            workload_id=locked.workload_id,
            kind=WorkloadEvent.Kind.STEP,
            name=step_name,
            message=f"{locked.kind}: {step_name}: {rewind.reason}; back to {rewind.to_step}",
            detail={"run_id": str(locked.id), "rewind": rewinds},
        )
        remaining = tuple(name for name in workflow.step_names[target.position - 1 :])
        generation = locked.chain_generation
        transaction.on_commit(lambda: _enqueue_chain(locked.id, remaining, generation))
    logger.info("%s run %s back to %s: %s", run.kind, run.id, rewind.to_step, rewind.reason)
    return Stop(f"rewound to {rewind.to_step}")


def _enqueue_cleanup(run_id: UUID) -> None:
    current_app.send_task(CLEANUP_TASK, args=(str(run_id),))


def workflow_cleanup_execute(*, run_id: UUID | str) -> None:
    run = WorkflowRun.objects.select_related("workload").get(id=run_id)
    cleanup = WORKFLOWS[run.kind].cleanup
    if cleanup is not None:
        with log_context(workload_id=run.workload_id, run_id=run.id, kind=run.kind, step="cleanup"):
            cleanup(run)
