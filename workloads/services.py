"""Writes for customers, API keys and workloads.

Every state change goes through ``workload_transition``: one transaction, the
row taken with ``select_for_update()``, the django-fsm transition, one
``WorkloadEvent``, and the routing KV status updated once the transaction has
committed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.db.models import Max, Q
from django.utils import timezone
from django_fsm import can_proceed

from accounts.models import Customer
from arbitrage.errors import DomainError
from placement.clouds.base import CloudError, CloudNotConfigured, InstanceNotFound, get_cloud
from placement.services import pool_lifetime_record
from workloads import routing
from workloads.errors import (
    IdempotencyKeyReused,
    LogBatchTooLarge,
    LogFinished,
    LogOffsetGap,
    NoCurrentInstance,
    TransitionRefused,
)
from workloads.models import (
    TRANSITIONS,
    WAITING_FOR_CAPACITY,
    HealthMonitor,
    InstanceStatus,
    LogStream,
    NotificationType,
    RecoveryPolicy,
    WorkflowKind,
    WorkflowRun,
    Workload,
    WorkloadEvent,
    WorkloadInstance,
    WorkloadLogCursor,
    WorkloadLogLine,
    WorkloadRouting,
    WorkloadStatus,
)
from workloads.notifications import notification_create, workload_waiting_payload
from workloads.selectors import instances_output_pending, workload_by_idempotency_key
from workloads.signals import instance_release_announce, workload_admit
from workloads.workflows.engine import workflow_run_cancel, workflow_run_create

logger = logging.getLogger(__name__)

# --- workloads ----------------------------------------------------------------


def _fingerprint(**request: Any) -> str:
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def workload_create(
    *,
    customer: Customer,
    name: str,
    requirements: dict[str, Any],
    config: dict[str, Any],
    recovery_policy: str = RecoveryPolicy.MIGRATE,
    idempotency_key: str | None = None,
    expected_duration_seconds: int | None = None,
    deadline: datetime | None = None,
    on_demand_fallback: bool | None = None,
    admitted: bool = False,
) -> tuple[Workload, bool]:
    """Store a new PENDING workload; returns ``(workload, created)``.

    With an ``idempotency_key`` a retried create returns the workload the first
    call made (``created`` False) instead of making a second one; the same key
    with a different request is refused. Once this month's spend has reached the
    customer's monthly budget a new workload is refused (``BudgetExceeded``, 402)
    and the customer gets a BUDGET_EXCEEDED notification; nothing is stored.
    ``admitted``: the caller asked already (``workload_batch_create`` asks once for a whole batch).
    """
    if on_demand_fallback is None:
        on_demand_fallback = deadline is not None
    fingerprint = _fingerprint(
        name=name,
        requirements=requirements,
        config=config,
        recovery_policy=recovery_policy,
        **({"expected_duration_seconds": expected_duration_seconds} if expected_duration_seconds else {}),
        **({"deadline": deadline.isoformat(), "on_demand_fallback": on_demand_fallback} if deadline else {}),
    )
    if idempotency_key:
        existing = workload_by_idempotency_key(customer=customer, idempotency_key=idempotency_key)
        if existing is not None:
            return _idempotent_replay(existing, fingerprint), False
    if not admitted:
        workload_admit(customer=customer)
    try:
        with transaction.atomic():
            workload = Workload.objects.create(
                customer=customer,
                name=name,
                requirements=requirements,
                config=config,
                recovery_policy=recovery_policy,
                idempotency_key=idempotency_key or None,
                request_fingerprint=fingerprint,
                expected_duration_seconds=expected_duration_seconds,
                deadline=deadline,
                on_demand_fallback=on_demand_fallback,
            )
            WorkloadEvent.objects.create(
                workload=workload,
                kind=WorkloadEvent.Kind.INFO,
                name="created",
                to_status=workload.status,
                message="Workload submitted.",
            )
            transaction.on_commit(lambda: routing.kv_set_status(workload_id=workload.id, status=WorkloadStatus.PENDING))
            workflow_run_create(kind=WorkflowKind.PROVISION, workload=workload)
    except IntegrityError:
        # A concurrent retry with the same key won the race: answer with its workload.
        if not idempotency_key:
            raise
        existing = workload_by_idempotency_key(customer=customer, idempotency_key=idempotency_key)
        if existing is None:
            raise
        return _idempotent_replay(existing, fingerprint), False
    return workload, True


def workload_batch_create(
    *, customer: Customer, workloads: list[dict[str, Any]], idempotency_key: str | None = None
) -> tuple[list[Workload], bool]:
    """Store many new PENDING workloads in one transaction (a parameter sweep): all of them or none.

    Each item holds ``workload_create``'s arguments and is made as it makes one; the budget is asked
    once for the batch. With an ``idempotency_key`` the item at index ``i`` gets a key of its own made
    from it and ``i``, so a retried batch answers with the workloads the first one made. Returns the
    workloads in the order given and whether every one of them was such a replay.
    """
    prefix = f"batch:{hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]}" if idempotency_key else None
    if prefix is None or workload_by_idempotency_key(customer=customer, idempotency_key=f"{prefix}:0") is None:
        workload_admit(customer=customer)
    made: list[tuple[Workload, bool]] = []
    with transaction.atomic():
        for index, item in enumerate(workloads):
            key = f"{prefix}:{index}" if prefix else None
            made.append(workload_create(customer=customer, idempotency_key=key, admitted=True, **item))
    return [workload for workload, _ in made], not any(created for _, created in made)


def _idempotent_replay(existing: Workload, fingerprint: str) -> Workload:
    if existing.request_fingerprint != fingerprint:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was already used with a different request.",
            workload_id=str(existing.id),
        )
    return existing


def workload_transition(
    *,
    workload_id: UUID | str,
    transition: str,
    message: str = "",
    detail: dict[str, Any] | None = None,
    **fields: Any,
) -> Workload:
    """Apply one state-machine transition to a workload, or raise ``TransitionRefused``.

    ``fields`` are model fields to set in the same save (``failure_reason``,
    ``started_at``, ...).
    """
    with transaction.atomic():
        workload = Workload.objects.select_for_update().get(id=workload_id)
        workload_transition_locked(workload, transition, message=message, detail=detail, **fields)
    return workload


def workload_terminate(*, workload_id: UUID | str, reason: str = "Terminated by the customer.") -> Workload:
    """User terminate (RUNNING) or cancel (PENDING, PROVISIONING) → STOPPING, then the termination workflow.

    Cancelling stops the provisioning run: its next step sees the run cancelled,
    and a create in flight undoes itself; the termination workflow cleans up
    whatever the run had already made.
    """
    with transaction.atomic():
        workload = Workload.objects.select_for_update().get(id=workload_id)
        cancelling = workload.status in (WorkloadStatus.PENDING, WorkloadStatus.PROVISIONING)
        workload_transition_locked(
            workload, "cancel" if cancelling else "user_terminate", message=reason, termination_reason=reason
        )
        workflow_run_cancel(workload_id=workload.id, kind=WorkflowKind.PROVISION, reason=reason)
        workflow_run_create(kind=WorkflowKind.TERMINATE, workload=workload, payload={"reason": reason})
    return workload


def workload_transition_locked(
    workload: Workload,
    transition: str,
    *,
    message: str = "",
    detail: dict[str, Any] | None = None,
    events: list[WorkloadEvent] | None = None,
    save: Callable[[list[str]], None] | None = None,
    **fields: Any,
) -> None:
    """The transition on a row the caller took with ``select_for_update()`` in its transaction.

    A step's effects pass ``events`` and ``save`` (``StepContext.events``, ``.workload_save``): the
    transition's event is added to ``events`` and the changed fields go to ``save``, for the
    step's record to write with its others in one INSERT and one UPDATE, instead of now.
    """
    if transition not in TRANSITIONS:
        raise ValueError(f"unknown workload transition {transition!r}")
    method = getattr(workload, transition)
    from_status = workload.status
    if not can_proceed(method):
        raise TransitionRefused(workload_id=workload.id, transition=transition, current_state=from_status)
    method()
    for name, value in fields.items():
        setattr(workload, name, value)
    # Only what the transition changes: another effect of the same record may have saved other fields.
    if save is None:
        workload.save(update_fields=["status", *fields, "updated_at"])
    else:
        save(["status", *fields])
    event = WorkloadEvent(
        workload=workload,
        kind=WorkloadEvent.Kind.TRANSITION,
        name=transition,
        from_status=from_status,
        to_status=workload.status,
        message=message,
        detail=detail or {},
    )
    if events is None:
        event.save()
    else:
        events.append(event)
    workload_id, status = workload.id, workload.status
    transaction.on_commit(lambda: routing.kv_set_status(workload_id=workload_id, status=status))


# --- instances and routing: the pieces termination and cleanup share ----------------


def instance_terminate(*, instance: WorkloadInstance) -> WorkloadInstance:
    """Terminate one instance in its cloud (idempotent), keep its last log lines, record when it stopped."""
    if instance.status in (InstanceStatus.TERMINATED, InstanceStatus.FAILED) and instance.terminated_at:
        return instance
    if instance.instance_id:
        get_cloud(instance.provider).terminate_instance(instance.instance_id, instance.region)
        instance_output_collect(instance=instance, final=True)  # its last lines, now that it has stopped
    now = timezone.now()
    if WorkloadInstance.objects.filter(pk=instance.pk, terminated_at__isnull=True).update(
        status=InstanceStatus.TERMINATED, terminated_at=now
    ):
        instance.status, instance.terminated_at = InstanceStatus.TERMINATED, now
    else:
        instance.refresh_from_db()  # another terminate got there first: its time stands
    return instance


def workload_row_upsert(*, model: type[models.Model], workload: Workload, values: dict[str, Any]) -> None:
    """Set ``values`` on the workload's one row of ``model`` (its routing, its health monitor), made if missing.

    ``workload`` is a row the caller locked (``select_for_update``), best with that relation
    selected: then one query, an INSERT or an UPDATE (``update_or_create`` locks and savepoints).
    Under that lock no other writer makes the row meanwhile.
    """
    accessor = model._meta.get_field("workload").remote_field.get_accessor_name()
    row = getattr(workload, accessor, None)  # None when missing: RelatedObjectDoesNotExist is an AttributeError
    if row is None or not model.objects.filter(pk=row.pk).update(**values):
        model.objects.create(workload=workload, **values)


def routing_remove(*, workload_id: UUID | str) -> None:
    WorkloadRouting.objects.filter(workload_id=workload_id).delete()
    transaction.on_commit(lambda: routing.kv_delete_endpoint(workload_id=workload_id))


def health_monitoring_stop(*, workload_id: UUID | str) -> None:
    HealthMonitor.objects.filter(workload_id=workload_id, active=True).update(active=False, stopped_at=timezone.now())


def workload_instances_release(*, workload_id: UUID | str, reason: str) -> list[WorkloadInstance]:
    """Terminate and bill every instance the workload still has, stop monitoring it, drop its routing."""
    released = []
    for instance in WorkloadInstance.objects.filter(workload_id=workload_id, terminated_at__isnull=True):
        released.append(instance_terminate(instance=instance))
    with transaction.atomic():
        health_monitoring_stop(workload_id=workload_id)
        routing_remove(workload_id=workload_id)
        for instance in WorkloadInstance.objects.filter(workload_id=workload_id, terminated_at__isnull=False):
            instance_release_record(instance=instance)
    return released


def workload_current_instance(*, workload_id: UUID | str) -> WorkloadInstance | None:
    return (
        WorkloadInstance.objects.filter(workload_id=workload_id, terminated_at__isnull=True)
        .order_by("-created_at")
        .first()
    )


def instance_release_record(*, instance: WorkloadInstance) -> list[dict[str, Any]]:
    """An ended instance: its lifetime goes into its pool's statistics (once), and billing is told.

    Its lifetime runs from when it became healthy (or was created) to its reclaim, or to its
    end when it was not reclaimed (a censored lifetime). Returns what billing recorded.
    """
    now = timezone.now()
    if instance.terminated_at is not None and WorkloadInstance.objects.filter(
        pk=instance.pk, observed_at__isnull=True
    ).update(observed_at=now):
        began = instance.healthy_at or instance.created_at
        ended = instance.preempted_at or instance.terminated_at
        pool_lifetime_record(
            pool=(instance.provider, instance.region, instance.availability_zone, instance.instance_type),
            market=instance.market,
            seconds=max((ended - began).total_seconds(), 0.0),
            preempted=instance.preempted_at is not None,
        )
    return instance_release_announce(instance=instance)


# --- progress and capacity --------------------------------------------------------------


def workload_progress_report(*, workload_id: UUID | str, completed_seconds: float, finished: bool = False) -> Workload:
    """The workload's own count of the compute it has done (its agent reports it).

    ``finished``: the job says it is done; a running workload is then terminated ("Finished").
    """
    with transaction.atomic():
        workload = Workload.objects.select_for_update().get(id=workload_id)
        workload.progress_seconds = float(completed_seconds)
        workload.progress_updated_at = timezone.now()
        workload.progress_reported = True
        workload.save(update_fields=["progress_seconds", "progress_updated_at", "progress_reported", "updated_at"])
    if finished and workload.status == WorkloadStatus.RUNNING:
        workload = workload_terminate(
            workload_id=workload.id, reason=f"Finished after {completed_seconds:g} s of work."
        )
    return workload


def workload_progress_restore(
    *,
    workload_id: UUID | str,
    instance: WorkloadInstance,
    checkpoint_at: datetime | None,
    checkpoint_progress: float | None,
) -> None:
    """After ``instance`` ended in a migration, progress is what its last checkpoint kept.

    A workload that reports progress goes back to the value its newest checkpoint holds
    (its agent restores from it). One that does not is credited the run time of the
    instance up to that checkpoint; the work after it was lost with the instance.
    """
    with transaction.atomic():
        workload = Workload.objects.select_for_update().get(id=workload_id)
        if workload.progress_reported:
            if checkpoint_progress is None:
                return
            workload.progress_seconds = checkpoint_progress
        else:
            if instance.healthy_at is None or checkpoint_at is None:
                return
            since = max(instance.healthy_at, workload.progress_updated_at or instance.healthy_at)
            until = min(checkpoint_at, instance.terminated_at or checkpoint_at)
            if until <= since:
                return
            workload.progress_seconds += (until - since).total_seconds()
        workload.progress_updated_at = timezone.now()
        workload.save(update_fields=["progress_seconds", "progress_updated_at", "updated_at"])


def workload_capacity_wait(*, workload_id: UUID | str, next_attempt_at: datetime, detail: dict[str, Any]) -> None:
    """No pool has capacity now: say so on the workload, and tell the customer once per wait."""
    with transaction.atomic():
        workload = Workload.objects.select_for_update().get(id=workload_id)
        first = workload.status_reason != WAITING_FOR_CAPACITY
        workload.status_reason = WAITING_FOR_CAPACITY
        workload.next_attempt_at = next_attempt_at
        workload.save(update_fields=["status_reason", "next_attempt_at", "updated_at"])
        if first:
            WorkloadEvent.objects.create(
                workload=workload,
                kind=WorkloadEvent.Kind.INFO,
                name="waiting-for-capacity",
                message=f"No pool has capacity now; next attempt at {next_attempt_at.isoformat(timespec='seconds')}.",
                detail=detail,
            )
            notification_create(
                workload=workload,
                type=NotificationType.WORKLOAD_WAITING,
                payload=workload_waiting_payload(workload=workload, next_attempt_at=next_attempt_at),
                dedupe_key=f"waiting:{timezone.now().isoformat()}",
            )


def workload_capacity_found(*, workload: Workload) -> None:
    """Capacity was found: the workload (a row the caller locked) no longer waits for it."""
    if workload.status_reason != WAITING_FOR_CAPACITY:
        return
    workload.status_reason, workload.next_attempt_at = "", None
    workload.save(update_fields=["status_reason", "next_attempt_at", "updated_at"])


# --- operator actions (the admin console) ----------------------------------------------


def workload_provision_retry(*, workload_id: UUID | str) -> WorkflowRun:
    """FAILED → PENDING and a new provisioning run; the failed run stays as it was, for the record.

    Only a FAILED workload can be retried (``TransitionRefused`` otherwise). Its
    failure reason and quota reservation are cleared: validate-quotas counts it
    again. A failed run already released whatever it had made.
    """
    with transaction.atomic():
        workload = Workload.objects.select_for_update().get(id=workload_id)
        previous = workload.failure_reason
        workload_transition_locked(
            workload,
            "retry",
            message="Provisioning retried by an operator.",
            detail={"previous_failure": previous},
            failure_reason="",
            capacity_reserved_at=None,
        )
        return workflow_run_create(
            kind=WorkflowKind.PROVISION, workload=workload, payload={"retry": True, "previous_failure": previous}
        )


def workload_migrate_now(*, workload_id: UUID | str) -> WorkflowRun:
    """Move a RUNNING workload to the best other pool now: the migration workflow, as a planned move.

    Like a rebalance, the workload passes through INTERRUPTED (signal
    ``operator``), its pool is not blocked but excluded from the re-placement,
    and the agent is asked for a checkpoint first (the workflow does that for a
    planned move, which its payload calls ``rebalance``). Refused, leaving the
    workload where it is, when no other offer fits it.
    """
    from placement.errors import NoPlacement
    from placement.selectors import placement_candidates

    with transaction.atomic():
        workload = Workload.objects.select_for_update().get(id=workload_id)
        instance = workload_current_instance(workload_id=workload.id)
        if workload.status != WorkloadStatus.RUNNING or instance is None:
            raise TransitionRefused(workload_id=workload.id, transition="migrate", current_state=workload.status)
        pool = [instance.provider, instance.region, instance.availability_zone, instance.instance_type]
        try:
            best = placement_candidates(requirements=workload.requirements, limit=1, exclude_pools=[tuple(pool)])[0]
        except NoPlacement as none:
            raise DomainError(f"No other offer fits this workload, so it stays where it is: {none.message}") from None
        workload_transition_locked(
            workload,
            "spot_interrupt",
            message=f"Migration asked by an operator, away from {'/'.join(pool)}.",
            detail={"signal": "operator", "best_offer": f"{best.provider}/{best.region}/{best.instance_type}"},
        )
        return workflow_run_create(
            kind=WorkflowKind.MIGRATE,
            workload=workload,
            payload={
                "reason": "migration asked by an operator",
                "signal": "rebalance",  # a planned move: wait-for-final-checkpoint asks the agent for one
                "requested_by": "operator",
                "exclude_pools": [pool],
                "from_instance": str(instance.id),
            },
        )


# --- the workload's log: its instances' output, collected into the database ------------------

#: One read of an instance's console output takes at most this much.
OUTPUT_READ_BYTES = 1 << 20
#: Reads of an ended instance in one collection, to reach the end of its output.
FINAL_READS = 16
#: An unfinished line (no newline yet) this long is stored as it is, not waited for. Below the
#: shipper's batch (``agent/ship.py``, 32 KiB), so every full batch it pushes stores something.
MAX_PENDING_BYTES = 16 * 1024
#: The most a pushed batch (``POST /api/v1/agent/logs``) may carry, decoded.
PUSH_MAX_BYTES = 256 * 1024
#: Ended instances beat still looks at when they were not collected to the end (a failed last read).
LATE_COLLECT_WINDOW = timedelta(hours=1)


def _output_texts(data: bytes, *, final: bool) -> tuple[list[str], int]:
    """The lines in ``data`` and how many of its bytes they use.

    Only complete lines (up to the last newline) are taken, so a line written in two
    pieces is stored whole: the rest is read again next time. At the end of the output
    (``final``), or when the rest is already ``MAX_PENDING_BYTES`` long, it is taken too.
    Lines over ``WorkloadLogLine.MAX_TEXT`` characters are split.
    """
    used = data.rfind(b"\n") + 1
    if final or len(data) - used >= MAX_PENDING_BYTES:
        used = len(data)
    texts = []
    for raw in data[:used].splitlines():
        text = raw.decode("utf-8", "replace").replace("\x00", "\ufffd")
        limit = WorkloadLogLine.MAX_TEXT
        texts.extend([text[i : i + limit] for i in range(0, len(text), limit)] or [""])
    return texts, used


def _log_lines_append(
    *, workload_id: UUID | str, texts: list[str], stream: str, instance_id: str = "", provider: str = ""
) -> list[WorkloadLogLine]:
    """Store lines at the end of the workload's log: positions given out under the workload row's lock."""
    with transaction.atomic(savepoint=False):  # inside the cursor's transaction: no savepoint of its own
        list(Workload.objects.select_for_update().filter(id=workload_id).values_list("id", flat=True))
        last = WorkloadLogLine.objects.filter(workload_id=workload_id).aggregate(last=Max("position"))["last"] or 0
        now = timezone.now()
        return WorkloadLogLine.objects.bulk_create(
            WorkloadLogLine(
                workload_id=workload_id,
                position=last + number,
                time=now,
                instance_id=instance_id,
                provider=provider,
                stream=stream,
                text=text,
            )
            for number, text in enumerate(texts, start=1)
        )


def workload_log_mark(*, workload_id: UUID | str, text: str, instance_id: str = "", provider: str = "") -> None:
    """A ``marker`` line from the control plane (where the workload moved to another instance)."""
    _log_lines_append(
        workload_id=workload_id,
        texts=[text[: WorkloadLogLine.MAX_TEXT]],
        stream=LogStream.MARKER,
        instance_id=instance_id,
        provider=provider,
    )


def _log_cursor_append(
    *, instance: WorkloadInstance, offset: int, data: bytes, final: bool, resume: bool = False
) -> tuple[WorkloadLogCursor, int]:
    """Store ``data``, the instance's output from byte ``offset`` on, at its log cursor; (cursor, lines stored).

    The one way output reaches the log, pulled from the cloud or pushed by the instance. The
    cursor row is taken with ``select_for_update()``. Bytes the cursor has already passed are
    skipped (a resend, or a collector that raced, stores nothing twice); data that starts past
    the cursor is a gap (``LogOffsetGap`` with ``expected_offset``) unless ``resume`` says the
    bytes in between are lost for good: a marker says how many, and the cursor jumps. Complete
    lines are stored, the unfinished rest only at the end (``final``) or once it is long
    (``_output_texts``); ``final`` also finishes the cursor. A finished cursor takes nothing.
    """
    with transaction.atomic():
        cursor, _ = WorkloadLogCursor.objects.select_for_update().get_or_create(instance=instance)
        if cursor.finished_at is not None:
            return cursor, 0
        stored = 0
        if offset > cursor.offset:
            if not resume:
                raise LogOffsetGap(
                    f"This batch starts at byte {offset}; the log has the output up to byte {cursor.offset}.",
                    expected_offset=cursor.offset,
                )
            workload_log_mark(
                workload_id=instance.workload_id,
                text=f"{offset - cursor.offset} bytes of output were lost on the way from the instance.",
                instance_id=instance.instance_id,
                provider=instance.provider,
            )
            stored, cursor.offset = 1, offset
        fresh = data[cursor.offset - offset :]
        texts, used = _output_texts(fresh, final=final)
        if texts:
            _log_lines_append(
                workload_id=instance.workload_id,
                texts=texts,
                stream=LogStream.OUTPUT,
                instance_id=instance.instance_id,
                provider=instance.provider,
            )
        cursor.offset += used
        cursor.collected_at = timezone.now()
        if final:
            cursor.finished_at = cursor.collected_at
        cursor.save(update_fields=["offset", "collected_at", "finished_at"])
        return cursor, stored + len(texts)


def instance_output_collect(*, instance: WorkloadInstance, final: bool = False) -> int:
    """Pull the new lines of one instance's console output (stdout and stderr); how many were stored.

    The byte offset already stored is kept per instance (``WorkloadLogCursor``). The cloud
    is read outside any transaction, from where the cursor was; the bytes are stored by
    ``_log_cursor_append``, so two collectors that race (or a collector and the instance's
    own pushes) never store a line twice. An ended instance (``final``, or ``terminated_at``
    set) is read to the end, its last unfinished line included, and its cursor is finished:
    nothing is read from it again. A cloud error is logged and left for the next collection
    (an instance the cloud no longer knows has nothing more to give).
    """
    if not instance.instance_id:
        return 0
    final = final or instance.terminated_at is not None
    # A cursor is stored with the first bytes stored (``_log_cursor_append``); until then it is at 0.
    cursor = WorkloadLogCursor.objects.filter(instance=instance).first() or WorkloadLogCursor(instance=instance)
    stored = 0
    for _ in range(FINAL_READS if final else 1):
        if cursor.finished_at is not None:
            break
        read_from = cursor.offset
        try:
            data = get_cloud(instance.provider).console_output(
                instance.instance_id, instance.region, offset=read_from, limit=OUTPUT_READ_BYTES
            )
        except (InstanceNotFound, CloudNotConfigured):
            data = b""
            final = True
        except CloudError as error:
            logger.warning("log collection of instance %s failed: %s", instance.instance_id, error)
            break
        at_end = final and len(data) < OUTPUT_READ_BYTES
        if not data and not at_end:
            break  # nothing new: no write (a follower polls this every second)
        try:
            cursor, count = _log_cursor_append(instance=instance, offset=read_from, data=data, final=at_end)
        except LogOffsetGap:
            break  # cannot happen while the cursor only moves forward; the next collection reads again
        stored += count
        if at_end or len(data) < OUTPUT_READ_BYTES:
            break
    return stored


def workload_output_push(
    *, workload_id: UUID | str, offset: int, data: bytes, final: bool = False, resume: bool = False
) -> tuple[WorkloadInstance, WorkloadLogCursor, int]:
    """Output the workload's instance pushed itself (``agent/ship.py``): (instance, its cursor, lines stored).

    It goes to the log of the workload's current instance (the newest not terminated; none is
    ``NoCurrentInstance``, 409) by the same byte-offset rules as the pulled output
    (``_log_cursor_append``). A batch for a cursor already finished is taken when it brings
    nothing new (a resend of the last batch), else refused (``LogFinished``, 409).
    """
    if len(data) > PUSH_MAX_BYTES:
        raise LogBatchTooLarge(
            f"A batch carries at most {PUSH_MAX_BYTES} bytes of output; this one has {len(data)}.",
            max_bytes=PUSH_MAX_BYTES,
        )
    instance = workload_current_instance(workload_id=workload_id)
    if instance is None:
        raise NoCurrentInstance(f"Workload {workload_id} has no running instance to take its output.")
    cursor, stored = _log_cursor_append(instance=instance, offset=offset, data=data, final=final, resume=resume)
    if cursor.finished_at is not None and stored == 0 and offset + len(data) > cursor.offset:
        raise LogFinished(
            f"The log of instance {instance.instance_id} is finished at byte {cursor.offset}: it takes no more."
        )
    return instance, cursor, stored


def workload_output_collect(*, workload_id: UUID | str) -> int:
    """Collect the new lines of every instance of the workload that may have some; how many were stored."""
    return sum(
        instance_output_collect(instance=instance)
        for instance in instances_output_pending().filter(workload_id=workload_id)
    )


def workload_outputs_collect() -> int:
    """Beat: collect the output of every live instance, and of those that ended lately without their last lines."""
    since = timezone.now() - LATE_COLLECT_WINDOW
    instances = instances_output_pending().filter(Q(terminated_at__isnull=True) | Q(terminated_at__gte=since))
    return sum(instance_output_collect(instance=instance) for instance in instances)


def workload_logs_expire(*, now: datetime | None = None, batch_size: int = 5000) -> int:
    """Delete the log lines of ended workloads whose retention is over; how many lines.

    A workload with storage keeps its lines as long as its storage: from when the storage
    became read-only (else from its end) for the storage's ``retention_days``. Without
    storage, ``LOGS_RETENTION_DAYS`` from its end (``terminated_at``; a FAILED one's last change).
    """
    now = now or timezone.now()
    ended = (
        Workload.objects.filter(status__in=(WorkloadStatus.TERMINATED, WorkloadStatus.FAILED))
        .filter(id__in=WorkloadLogLine.objects.values("workload_id"))
        .values(
            "id",
            "terminated_at",
            "updated_at",
            "storage_config__storage_enabled",
            "storage_config__retention_days",
            "storage_config__read_only_since",
        )
    )
    deleted = 0
    for row in ended:
        ended_at = row["terminated_at"] or row["updated_at"]
        if row["storage_config__storage_enabled"]:
            ended_at = row["storage_config__read_only_since"] or ended_at
            days = row["storage_config__retention_days"]
        else:
            days = settings.LOGS_RETENTION_DAYS
        if now < ended_at + timedelta(days=days):
            continue
        while True:
            ids = list(WorkloadLogLine.objects.filter(workload_id=row["id"]).values_list("id", flat=True)[:batch_size])
            if not ids:
                break
            deleted += WorkloadLogLine.objects.filter(id__in=ids).delete()[0]
    return deleted
