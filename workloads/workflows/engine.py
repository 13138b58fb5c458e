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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from celery import chain, current_app
from django.conf import settings
from django.db import DatabaseError, models, transaction
from django.db.models import Case, Exists, F, OuterRef, Value, When
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
    """The awaited condition does not hold yet: check again after the poll interval.

    ``swept``: a sweep watches the condition for many runs at once and wakes this run when it holds
    (``workloads/workflows/readiness.py``); the run's own re-check is then only a fallback, every
    ``Poll.swept_every_seconds`` and at the latest at the wait's limit, where it gives up after the
    same time as unswept checks would.
    """

    def __init__(self, reason: str, *, swept: bool = False) -> None:
        super().__init__(reason)
        self.swept = swept


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
    ``effect``: database writes that go with the rewind, made in its transaction
    (after the results recorded before it, e.g. the instance row of a create).
    """

    def __init__(self, to_step: str, reason: str, *, effect: Callable[[], None] | None = None) -> None:
        super().__init__(reason)
        self.to_step = to_step
        self.reason = reason
        self.effect = effect


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
    """A wait: re-check every ``every_seconds``, at most ``max_checks`` times (``every_seconds x max_checks`` in all).

    ``swept_every_seconds``: the re-check of a swept wait (``NotYet(swept=True)``); None: as unswept.
    """

    every_seconds: float = 5
    max_checks: int = 60
    timeout_message: str = "Timeout"
    swept_every_seconds: float | None = None


# Database hiccups (a lock timeout, a dropped connection) are retried for every step.
DATABASE_RETRY = RetryPolicy(limit=5, delay_seconds=2, exponential=True, retry_on=(DatabaseError,))


@dataclass(frozen=True)
class Step:
    """One named step.

    ``follows``: the step runs in the same task as the step before it, right after it, and both
    are recorded in one transaction (no Celery hop, one record). Its body must do nothing outside
    that a crash before that record would leave wrong: it reads (the database, a cloud's status,
    a health endpoint) and writes only through ``on_commit_effects``. It sees the results of the
    steps before it (``result_of``) but not yet their database effects, which are applied in
    order, in the same transaction, before its own.

    ``inline``: the step runs in the same task as the step before it, once that one's record has
    committed: no Celery hop, but its own record (and its own try, counted at its start), so it may
    change something outside as a step with a task of its own does. A run's steps then start one
    after the other in one task instead of waiting, each, behind every other run's queued steps.
    """

    name: str
    body: Callable[[StepContext], Any]
    retry: RetryPolicy | None = None
    poll: Poll | None = None
    compensate: Callable[[StepContext, Any], None] | None = None
    follows: bool = False
    inline: bool = False

    @property
    def counted_at_start(self) -> bool:
        """A try of this step is written before its body runs: it is seen running, and counted if a worker dies in it.

        So are the steps that change something outside (those with a retry policy or a
        compensation: cloud creates and terminations). The others write their try with its
        outcome, one write fewer: reads and database work that a dead worker leaves undone.
        """
        return self.retry is not None or self.compensate is not None


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

    def batch(self, name: str) -> tuple[str, ...]:
        """``name`` and the steps right after it that follow it in the same task."""
        names = self.step_names
        start = names.index(name)
        end = start + 1
        while end < len(names) and self.steps[end].follows:
            end += 1
        return names[start:end]

    def chain_heads(self, names: tuple[str, ...]) -> tuple[str, ...]:
        """The steps of ``names`` that get a task of their own: the first, and each neither following nor inline."""
        return tuple(
            name
            for index, name in enumerate(names)
            if index == 0 or not (self.step(name).follows or self.step(name).inline)
        )

    def inline_after(self, name: str) -> str | None:
        """The step that runs inline after ``name``'s batch, in its task, if there is one."""
        names = self.step_names
        after = names.index(self.batch(name)[-1]) + 1
        return names[after] if after < len(names) and self.steps[after].inline else None


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
    # The results known to this task: the steps loaded with the run, and those run before this one.
    results: dict[str, Any] = field(default_factory=dict)
    locked_workload: Workload | None = None
    # The try was written when it started (``Step.counted_at_start``, the first step of its task).
    counted: bool = False
    # Fields of the locked workload the effects changed, saved in one UPDATE after them (``workload_save``).
    workload_fields: set[str] | None = None
    # Events the effects add (a transition's), written with the step's own in one INSERT.
    events: list[WorkloadEvent] = field(default_factory=list)

    @property
    def attempt(self) -> int:
        return self.step.attempts

    @property
    def payload(self) -> dict[str, Any]:
        return self.run.payload

    def result_of(self, step_name: str) -> Any:
        if step_name in self.results:
            return self.results[step_name]
        return WorkflowStep.objects.values_list("result", flat=True).get(run=self.run, name=step_name)

    def on_commit_effects(self, effect: Callable[[], None]) -> None:
        """Run ``effect`` in the transaction that records this step's result."""
        self.effects.append(effect)

    def workload_for_update(self) -> Workload:
        """In an effect: the workload row, as locked (``select_for_update``) by the transaction recording the step.

        One row for every effect of the record, so what one effect saves the next one sees; its
        ``routing`` and ``monitor`` come with it.
        """
        if self.locked_workload is None:
            raise RuntimeError("the workload is locked only while a step's effects run")
        return self.locked_workload

    def workload_save(self, fields: Iterable[str]) -> None:
        """In an effect: save these fields of ``workload_for_update()`` once every effect of the record has run.

        One UPDATE for every change the record makes to the workload row.
        """
        if self.workload_fields is None:
            raise RuntimeError("the workload is saved only while a step's effects run")
        self.workload_fields.update(fields)


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
    heads = workflow.chain_heads(workflow.step_names)
    transaction.on_commit(lambda: _enqueue_chain(run.id, heads, run.chain_generation))
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
            heads = WORKFLOWS[run.kind].chain_heads(remaining)
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
            transaction.on_commit(lambda r=run.id, n=heads, g=generation: _enqueue_chain(r, n, g))
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
        heads = WORKFLOWS[run.kind].chain_heads(remaining)
        generation = run.chain_generation
        transaction.on_commit(lambda: _enqueue_chain(run.id, heads, generation))
    return True


def workflow_run_wake(*, run_id: UUID | str, kind: str, generation: int, waiting_step: str) -> None:
    """Run a waiting run's steps from ``waiting_step`` on now, beside its own countdown re-check.

    Unlike a kick, no new generation: nothing is superseded, so waking a run twice, or waking it as
    its own re-check comes, is harmless (the second to record finds the steps done and goes on from
    them). What the readiness sweep does for each run whose wait is over.
    """
    workflow = WORKFLOWS[kind]
    names = workflow.step_names[workflow.step_names.index(waiting_step) :]
    _enqueue_chain(UUID(str(run_id)), workflow.chain_heads(names), generation)


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
    """The batch of ``step_name``, then each inline step after it, in this task (``Step.inline``)."""
    seen: dict[str, str] = {}
    outcome = _batch_execute(run_id=run_id, step_name=step_name, generation=generation, seen=seen)
    first = outcome
    while isinstance(outcome, Done) and "kind" in seen:
        following = WORKFLOWS[seen["kind"]].inline_after(step_name)
        if following is None:
            break
        step_name = following
        with log_context(step=step_name):
            outcome = _batch_execute(run_id=run_id, step_name=step_name, generation=generation)
    return first if isinstance(outcome, Done) else outcome


def _batch_execute(
    *, run_id: UUID | str, step_name: str, generation: int, seen: dict[str, str] | None = None
) -> Outcome:
    """Execute ``step_name`` and the steps that follow it (``Step.follows``); ``seen`` gets the run's kind."""
    # One query for the run, its workload (its customer and routing) and every step's state and result.
    steps = list(
        WorkflowStep.objects.filter(run_id=run_id)
        .select_related("run__workload__customer", "run__workload__routing")
        .order_by("position")
    )
    if not steps:
        return Stop("no such run")
    run = steps[0].run
    if seen is not None:
        seen["kind"] = run.kind
    log_context_bind(workload_id=run.workload_id, kind=run.kind)
    if run.chain_generation != generation:
        return Stop("superseded by a resumed chain")
    workflow = WORKFLOWS[run.kind]
    by_name = {step.name: step for step in steps}
    known = {step.name: step.result for step in steps}
    named = by_name[step_name]
    # The step and those that follow it in this task; the ones a previous try recorded are passed over.
    todo = [by_name[name] for name in workflow.batch(step_name) if by_name[name].status != StepStatus.SUCCEEDED]
    if not todo:
        return Done(named.result)  # also once the run ended: a step recorded with the one before it
    if run.status != RunStatus.RUNNING:
        return Stop(f"run is {run.status}")

    done: list[tuple[StepContext, Step, Any]] = []
    for step in todo:
        step.run = run
        definition = workflow.step(step.name)
        now = timezone.now()
        step.attempts += 1
        step.started_at = step.started_at or now
        counted = not done and definition.counted_at_start
        if counted:
            _step_started(run, step, now)
        ctx = StepContext(run=run, workload=run.workload, step=step, results=known, counted=counted)
        try:
            result = definition.body(ctx)
        except Exception as error:  # noqa: BLE001 - sorted by _step_outcome, which logs the unexpected ones
            if not done:
                return _step_outcome(ctx, definition, error)
            # A step that follows did not finish: record the ones before it, then this one's outcome.
            return _record_then(done, ctx, definition, error)
        known[step.name] = result
        done.append((ctx, definition, result))

    outcome = _record(done)
    return Done(known[step_name]) if isinstance(outcome, Done) else outcome


def _record(done: list[tuple[StepContext, Step, Any]]) -> Outcome:
    """Record ``done``; when an effect fails, the steps before its step are recorded and its step acts on the error."""
    try:
        return _record_success(done)
    except _EffectFailed as failed:
        ctx, definition, _ = done[failed.index]
        return _record_then(done[: failed.index], ctx, definition, failed.error)
    except Exception as error:  # noqa: BLE001 - as above
        return _step_outcome(done[0][0], done[0][1], error)


def _record_then(
    done: list[tuple[StepContext, Step, Any]], ctx: StepContext, definition: Step, error: Exception
) -> Outcome:
    """Record ``done`` (the steps before ``ctx``'s in its task), then count ``ctx``'s try and act on its ``error``."""
    if done:
        recorded = _record(done)
        if not isinstance(recorded, Done):
            return recorded
    return _step_outcome(ctx, definition, error)


def _step_started(run: WorkflowRun, step: WorkflowStep, now: datetime) -> None:
    """The step is seen running, and its try counted (``Step.counted_at_start``)."""
    WorkflowStep.objects.filter(pk=step.pk).update(
        status=StepStatus.RUNNING, attempts=F("attempts") + 1, started_at=step.started_at
    )
    # The heartbeat tells the stall detector the run is alive; a step recorded just now already said so.
    if run.heartbeat_at < now - timedelta(seconds=scaled(settings.WORKFLOW_STALL_SECONDS) / 10):
        WorkflowRun.objects.filter(pk=run.pk).update(heartbeat_at=now)


def _step_outcome(ctx: StepContext, definition: Step, error: Exception) -> Outcome:
    """What the task does when a step's body (or its effects) raised ``error``.

    A try not written when it started (``ctx.counted``) is written here, with the error when
    there is one to keep.
    """
    run, step, step_name, counted = ctx.run, ctx.step, ctx.step.name, ctx.counted
    started = (
        {} if counted else {"status": StepStatus.RUNNING, "attempts": F("attempts") + 1, "started_at": step.started_at}
    )

    def note(text: str) -> None:
        WorkflowStep.objects.filter(pk=step.pk).update(error=text, **started)

    def give_up(text: str) -> Stop:
        if not counted:
            _step_started(run, step, timezone.now())
        return _give_up(run, step_name, text)

    if isinstance(error, NotYet):
        poll = definition.poll or Poll()
        swept = error.swept and poll.swept_every_seconds is not None
        waited = (timezone.now() - step.started_at).total_seconds() if step.started_at else 0.0
        if step.attempts >= poll.max_checks or (swept and waited >= scaled(poll.every_seconds * poll.max_checks)):
            return give_up(f"{poll.timeout_message} ({error})")
        note(str(error))
        if swept:
            # Parked until the sweep wakes it: not stalled meanwhile (a resume would add a chain per run).
            # Its own re-check comes no later than the wait's limit, where it gives up if still not ready.
            left = scaled(poll.every_seconds * poll.max_checks) - waited
            countdown = max(min(scaled(poll.swept_every_seconds), left), scaled(poll.every_seconds))
            WorkflowRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() + timedelta(seconds=countdown))
            return RetryLater(countdown)
        return RetryLater(scaled(poll.every_seconds))
    if isinstance(error, WaitFor):
        note(str(error))
        WorkflowRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() + timedelta(seconds=error.countdown))
        return RetryLater(error.countdown)
    if isinstance(error, StepFailed):
        return give_up(str(error))
    if isinstance(error, Rewind):
        if not counted:
            _step_started(run, step, timezone.now())
        return _rewind(run, step_name, error)
    if isinstance(error, DomainError):
        # e.g. a transition refused because the workload moved on meanwhile.
        return give_up(error.message)
    for policy in (definition.retry, DATABASE_RETRY):
        if policy is not None and isinstance(error, policy.retry_on):
            if step.attempts <= policy.limit:
                note(f"{type(error).__name__}: {error}")
                return RetryLater(policy.countdown(step.attempts))
            return give_up(f"{error} (after {step.attempts} attempts)")
    logger.error("step %s of run %s failed unexpectedly", step_name, run.id, exc_info=error)
    return give_up(f"internal error in {step_name}: {type(error).__name__}: {error}")


class _EffectFailed(Exception):
    """An effect of the ``index``-th step of a record raised ``error`` (the record was rolled back)."""

    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(str(error))
        self.index = index
        self.error = error


class _AlreadyRecorded(Exception):
    """Another task (a duplicate chain) recorded one of the steps first."""


def _record_success(done: list[tuple[StepContext, Step, Any]]) -> Outcome:
    """Record the results of ``done``'s steps and apply their effects, in order, in ONE transaction.

    The workload row is locked first (the order every writer takes); the run's heartbeat is
    written only while it is running (a cancelled or failed run records nothing and the steps'
    ``compensate`` undo their outside effects); the steps are claimed in one UPDATE that skips
    those already succeeded, and one event per step is written in one INSERT.
    """
    run = done[0][0].run
    workflow = WORKFLOWS[run.kind]
    ids = [ctx.step.pk for ctx, _, _ in done]
    try:
        with transaction.atomic():
            # With its routing and health monitor: effects that set them need no query to know if they exist.
            workload = (
                Workload.objects.select_for_update(of=("self",))
                .select_related("routing", "monitor")
                .get(pk=run.workload_id)
            )
            finished = timezone.now()
            ended: dict[str, Any] = {}
            if done[-1][0].step.name == workflow.step_names[-1]:
                # The run ends with this record unless a step outside it is unfinished (read under the lock).
                unfinished = Exists(
                    WorkflowStep.objects.filter(run_id=OuterRef("pk"))
                    .exclude(pk__in=ids)
                    .exclude(status=StepStatus.SUCCEEDED)
                )
                ended = {
                    "status": Case(When(unfinished, then=Value(RunStatus.RUNNING)), default=Value(RunStatus.SUCCEEDED)),
                    "finished_at": Case(When(unfinished, then=None), default=Value(finished)),
                }
            if not WorkflowRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(
                heartbeat_at=finished, **ended
            ):
                raise _RunStopped
            if _steps_claim(done, finished) != len(done):
                raise _AlreadyRecorded
            changed: set[str] = set()
            for index, (ctx, _, _) in enumerate(done):
                ctx.locked_workload, ctx.workload_fields = workload, changed
                ctx.events.clear()
                try:
                    for effect in ctx.effects:
                        effect()
                except Exception as error:
                    raise _EffectFailed(index, error) from error
            if changed:
                workload.save(update_fields=[*sorted(changed), "updated_at"])
            WorkloadEvent.objects.bulk_create(
                event
                for ctx, _, _ in done
                for event in (
                    *ctx.events,
                    WorkloadEvent(
                        workload_id=run.workload_id,
                        kind=WorkloadEvent.Kind.STEP,
                        name=ctx.step.name,
                        message=f"{run.kind}: {ctx.step.name} done",
                        detail={
                            "run_id": str(run.id),
                            "attempts": ctx.step.attempts,
                            "seconds": round((finished - ctx.step.started_at).total_seconds(), 3),
                        },
                    ),
                )
            )
    except _RunStopped:
        for ctx, definition, result in done:
            if definition.compensate is not None:
                definition.compensate(ctx, result)
        return Stop("run stopped while the step ran")
    except _AlreadyRecorded:
        # A duplicate chain got there first: go on from what it recorded.
        return _batch_execute(run_id=run.pk, step_name=done[0][0].step.name, generation=run.chain_generation)
    for ctx, _, result in done:
        ctx.step.status, ctx.step.result, ctx.step.error, ctx.step.finished_at = (
            StepStatus.SUCCEEDED,
            result,
            "",
            finished,
        )
    return Done(done[0][2])


def _steps_claim(done: list[tuple[StepContext, Step, Any]], finished: datetime) -> int:
    """Mark ``done``'s steps succeeded with their results in one UPDATE; how many were not already."""

    def per_step(value: Callable[[WorkflowStep, Any], Any], output_field: models.Field) -> Case:
        return Case(
            *(
                When(pk=ctx.step.pk, then=Value(value(ctx.step, result), output_field=output_field))
                for ctx, _, result in done
            ),
            output_field=output_field,
        )

    return (
        WorkflowStep.objects.filter(pk__in=[ctx.step.pk for ctx, _, _ in done])
        .exclude(status=StepStatus.SUCCEEDED)
        .update(
            status=StepStatus.SUCCEEDED,
            result=per_step(lambda step, result: result, models.JSONField()),
            error="",
            finished_at=finished,
            # A try written when it started is counted already; the others are counted here.
            attempts=Case(
                *(When(pk=ctx.step.pk, then=F("attempts")) for ctx, _, _ in done if ctx.counted),
                default=F("attempts") + 1,
            ),
            started_at=per_step(lambda step, result: step.started_at, models.DateTimeField()),
        )
    )


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
        if rewind.effect is not None:
            rewind.effect()
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
        heads = workflow.chain_heads(workflow.step_names[target.position - 1 :])
        generation = locked.chain_generation
        transaction.on_commit(lambda: _enqueue_chain(locked.id, heads, generation))
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
