"""The termination workflow: the source's eight steps, in its order.

get-workload, update-status-stopping, stop-health-monitoring,
terminate-instance, schedule-storage-cleanup, remove-routing,
update-final-status, record-billing.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from placement.clouds.base import TransientCloudError
from storage.services import storage_schedule_cleanup
from workloads.models import (
    WorkflowKind,
    WorkloadEvent,
    WorkloadInstance,
    WorkloadStatus,
)
from workloads.services import (
    health_monitoring_stop,
    instance_release_record,
    instance_terminate,
    routing_remove,
    workload_transition_locked,
)
from workloads.workflows.engine import (
    RetryPolicy,
    Step,
    StepContext,
    StepFailed,
    Workflow,
    register,
    workflow_run_cancel,
)

S = WorkloadStatus
# Where termination may find a workload: STOPPING after terminate/cancel, or
# INTERRUPTED / UNHEALTHY when recovery is "terminate".
TERMINABLE = (S.STOPPING, S.INTERRUPTED, S.UNHEALTHY)


def get_workload(ctx: StepContext) -> dict[str, Any]:
    workload = ctx.workload  # loaded with the run, its routing with it
    routing_row = getattr(workload, "routing", None)
    return {
        "customer_id": str(workload.customer_id),
        "status": workload.status,
        "provider": routing_row.provider if routing_row else None,
        "region": routing_row.region if routing_row else None,
        "instance_id": routing_row.instance_id if routing_row else None,
    }


def update_status_stopping(ctx: StepContext) -> dict[str, Any]:
    """Make sure the workload is STOPPING (the API already moved it) and no provisioning goes on."""

    def stop() -> None:
        workload = ctx.workload_for_update()
        if workload.status == S.RUNNING:
            workload_transition_locked(
                workload, "user_terminate", message=ctx.payload.get("reason", ""), events=ctx.events
            )
        elif workload.status in (S.PENDING, S.PROVISIONING):
            workload_transition_locked(workload, "cancel", message=ctx.payload.get("reason", ""), events=ctx.events)
        elif workload.status not in TERMINABLE:
            raise StepFailed(f"Workload is {workload.status}; nothing to terminate")
        workflow_run_cancel(workload_id=workload.id, kind=WorkflowKind.PROVISION, reason="terminated")

    ctx.on_commit_effects(stop)
    return {"status": S.STOPPING}


def stop_health_monitoring(ctx: StepContext) -> dict[str, Any]:
    ctx.on_commit_effects(lambda: health_monitoring_stop(workload_id=ctx.workload.id))
    return {"stopped": True}


def terminate_instance(ctx: StepContext) -> dict[str, Any]:
    """Terminate every instance the workload still has (one, or one per migration leftover)."""
    terminated = []
    for instance in WorkloadInstance.objects.filter(workload_id=ctx.workload.id, terminated_at__isnull=True):
        instance = instance_terminate(instance=instance)
        terminated.append({"instance_id": instance.instance_id, "provider": instance.provider})
    return {"terminated": terminated}


def schedule_storage_cleanup(ctx: StepContext) -> dict[str, Any]:
    outcome: dict[str, Any] = {"scheduled": False}

    def schedule() -> None:
        expires_at = storage_schedule_cleanup(workload_id=ctx.workload.id)
        if expires_at is None:
            return
        outcome.update(scheduled=True, expires_at=expires_at.isoformat())
        WorkloadEvent.objects.create(
            workload_id=ctx.workload.id,
            kind=WorkloadEvent.Kind.INFO,
            name="STORAGE_CLEANUP_SCHEDULED",
            message=f"Storage kept until {expires_at.isoformat()}.",
            detail={"expiresAt": expires_at.isoformat(), "scheduledAt": timezone.now().isoformat()},
        )

    ctx.on_commit_effects(schedule)
    return outcome


def remove_routing(ctx: StepContext) -> dict[str, Any]:
    ctx.on_commit_effects(lambda: routing_remove(workload_id=ctx.workload.id))
    return {"removed": True}


def update_final_status(ctx: StepContext) -> dict[str, Any]:
    reason = ctx.payload.get("reason", "")

    def finish() -> None:
        workload = ctx.workload_for_update()
        if workload.status == S.TERMINATED:
            return
        now = timezone.now()
        WorkloadInstance.objects.filter(workload_id=workload.id, terminated_at__isnull=True).update(
            status="TERMINATED", terminated_at=now
        )
        workload_transition_locked(
            workload,
            "cleanup_complete",
            message=reason or "Cleanup complete.",
            events=ctx.events,
            terminated_at=now,
            termination_reason=workload.termination_reason or reason,
        )

    ctx.on_commit_effects(finish)
    return {"status": S.TERMINATED}


def record_billing(ctx: StepContext) -> dict[str, Any]:
    """Every ended instance is billed once (billing receives ``instance_released``)."""
    records = []

    def bill() -> None:
        ended = WorkloadInstance.objects.filter(workload_id=ctx.workload.id, terminated_at__isnull=False)
        for instance in ended.select_related("workload"):
            records.extend(instance_release_record(instance=instance))

    ctx.on_commit_effects(bill)
    return {"records": records}


STEPS = (
    Step("get-workload", get_workload),
    Step("update-status-stopping", update_status_stopping, follows=True),
    Step("stop-health-monitoring", stop_health_monitoring, follows=True),
    Step(
        "terminate-instance",
        terminate_instance,
        retry=RetryPolicy(limit=3, delay_seconds=5, retry_on=(TransientCloudError,)),
    ),
    Step("schedule-storage-cleanup", schedule_storage_cleanup, follows=True),
    Step("remove-routing", remove_routing, follows=True),
    Step("update-final-status", update_final_status, follows=True),
    Step("record-billing", record_billing, follows=True),
)

TERMINATE = register(Workflow(kind=WorkflowKind.TERMINATE, steps=STEPS))
