"""The migration workflow: a spot interruption or a failed health verdict, with recovery ``migrate``.

wait-for-final-checkpoint, terminate-old-instance, update-status-provisioning,
then the provisioning steps from find-placement on (excluding the interrupted
pool; the new instance's create writes the log's "moved" marker), and
notify-customer with WORKLOAD_MIGRATED. The workload keeps its id
and endpoint name; each instance is its own billed segment.
"""

from __future__ import annotations

import dataclasses
import json
import urllib.error
import urllib.request
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from placement.clouds.base import TransientCloudError
from storage.selectors import checkpoint_complete_list
from workloads import notifications
from workloads.models import (
    NotificationType,
    WorkflowKind,
    WorkflowRun,
    Workload,
    WorkloadEvent,
    WorkloadInstance,
    WorkloadRouting,
    WorkloadStatus,
)
from workloads.services import (
    health_monitoring_stop,
    instance_release_record,
    instance_terminate,
    workflow_run_create,
    workload_log_mark,
    workload_progress_restore,
    workload_transition_locked,
)
from workloads.workflows import provision
from workloads.workflows.engine import NotYet, Poll, RetryPolicy, Step, StepContext, Workflow, register, scaled

S = WorkloadStatus
# How long each cloud gives between the interruption notice and the reclaim.
NOTICE_SECONDS = {"aws": 120, "gcp": 30, "azure": 30}
FINAL_CHECKPOINT_EVENT = "final-checkpoint"


def wait_for_final_checkpoint(ctx: StepContext) -> dict[str, Any]:
    """Give the agent the provider's notice time to save and report its final checkpoint.

    Also let requests already sent to the old instance finish: the gateway stops
    sending it new ones once its cached route (at most a second old) shows the
    interruption.
    """
    waited = (timezone.now() - ctx.run.created_at).total_seconds()
    if waited < settings.GATEWAY_ROUTE_CACHE_SECONDS * 2 + 1:
        raise NotYet("letting requests in flight to the old instance finish")
    if not (ctx.workload.config.get("storage") or {}).get("enabled"):
        return {"final_checkpoint": None, "reason": "storage is off"}
    old = WorkloadInstance.objects.filter(id=ctx.payload.get("from_instance")).first()
    # The agent reports its final checkpoint with (so just before) the interruption it announces:
    # any report made while the old instance lived is this one.
    since = old.created_at if old is not None else ctx.run.created_at
    report = (
        WorkloadEvent.objects.filter(workload=ctx.workload, name=FINAL_CHECKPOINT_EVENT, created_at__gte=since)
        .order_by("-created_at")
        .first()
    )
    if report is not None:
        return {"final_checkpoint": report.detail.get("checkpoint")}
    if ctx.payload.get("signal") == "rebalance":
        checkpoint = _ask_agent_for_checkpoint(ctx)
        if checkpoint:
            return {"final_checkpoint": checkpoint}
    notice = scaled(NOTICE_SECONDS.get(old.provider if old else "", 30))
    if waited >= notice:
        return {"final_checkpoint": None, "reason": f"no report within the {notice:.0f} s notice"}
    raise NotYet("waiting for the agent's final checkpoint")


def _ask_agent_for_checkpoint(ctx: StepContext) -> str | None:
    """A planned move: ask the running agent for a checkpoint now (``POST /_agent/checkpoint``)."""
    route = WorkloadRouting.objects.filter(workload_id=ctx.workload.id).first()
    if route is None:
        return None
    request = urllib.request.Request(f"http://{route.endpoint}/_agent/checkpoint", data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            checkpoint = json.loads(response.read()).get("checkpoint")
    except (urllib.error.URLError, OSError, ValueError):
        return None  # not our agent, or it could not save: the notice-time wait decides
    if checkpoint:
        WorkloadEvent.objects.create(
            workload_id=ctx.workload.id,
            kind=WorkloadEvent.Kind.INFO,
            name=FINAL_CHECKPOINT_EVENT,
            message=f"The agent saved checkpoint {checkpoint} before the planned move.",
            detail={"checkpoint": checkpoint},
        )
    return checkpoint


def terminate_old_instance(ctx: StepContext) -> dict[str, Any]:
    """The old instance ends here and is billed as its own segment."""
    ended = []
    for instance in WorkloadInstance.objects.filter(workload_id=ctx.workload.id, terminated_at__isnull=True):
        instance = instance_terminate(instance=instance)
        ended.append(instance)
    latest = checkpoint_complete_list(workload_id=ctx.workload.id).first()

    def release() -> None:
        for instance in ended:
            instance_release_record(instance=instance)
            workload_progress_restore(
                workload_id=ctx.workload.id,
                instance=instance,
                checkpoint_at=latest.created_at if latest else None,
                checkpoint_progress=_checkpoint_progress(latest),
            )

    ctx.on_commit_effects(release)
    return {"terminated": [instance.instance_id for instance in ended]}


def _checkpoint_progress(checkpoint) -> float | None:
    """The progress a checkpoint says it holds (its manifest's metadata), when it says so."""
    metadata = ((checkpoint.manifest or {}).get("metadata") or {}) if checkpoint is not None else {}
    value = metadata.get("progress_seconds", metadata.get("progress"))
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def update_status_provisioning(ctx: StepContext) -> dict[str, Any]:
    def recover() -> None:
        workload = ctx.workload_for_update()
        if workload.status in (S.INTERRUPTED, S.UNHEALTHY):
            workload_transition_locked(workload, "recover", message="Re-placing the workload.", events=ctx.events)
        health_monitoring_stop(workload_id=workload.id)

    ctx.on_commit_effects(recover)
    return {"status": S.PROVISIONING}


def _pool(provider: str, region: str, zone: str) -> str:
    return "/".join(part for part in (provider, region, zone) if part)


def provision_new_instance(ctx: StepContext) -> dict[str, Any]:
    """provision-cloud-resources, and where the workload's log switches to the new instance: a marker.

    The old instance's last lines were stored when it was terminated (terminate-old-instance);
    the marker is stored with the new instance's row, before any of its lines can be.
    """
    created = provision.provision_cloud_resources(ctx)
    old = (
        WorkloadInstance.objects.filter(id=ctx.payload.get("from_instance")).first()
        or WorkloadInstance.objects.filter(workload_id=ctx.workload.id, terminated_at__isnull=False)
        .order_by("-terminated_at")
        .first()
    )
    placement = created["placement"]
    moved_to = _pool(placement["provider"], placement["region"], placement.get("availability_zone", ""))
    moved_from = _pool(old.provider, old.region, old.availability_zone) if old is not None else "another instance"
    ctx.on_commit_effects(
        lambda: workload_log_mark(
            workload_id=ctx.workload.id,
            text=f"moved {moved_from} → {moved_to}",
            instance_id=created["instance_id"],
            provider=created["provider"],
        )
    )
    return created


def notify_migrated(ctx: StepContext) -> dict[str, Any]:
    old = WorkloadInstance.objects.filter(id=ctx.payload.get("from_instance")).first()
    placement = ctx.result_of("provision-cloud-resources")["placement"]
    payload = notifications.workload_migrated_payload(
        workload=ctx.workload, reason=ctx.payload.get("reason", ""), old=old, placement=placement
    )
    ctx.on_commit_effects(
        lambda: notifications.notification_create(
            workload=ctx.workload,
            type=NotificationType.WORKLOAD_MIGRATED,
            payload=payload,
            dedupe_key=str(ctx.run.id),
            first_time=True,  # the step's record happens once per run (its claim)
        )
    )
    return payload


def migrate_cleanup(run: WorkflowRun) -> None:
    """A migration that gave up: fail a re-placement in progress, or terminate a workload still waiting."""
    with transaction.atomic():
        workload = Workload.objects.select_for_update().get(id=run.workload_id)
        if workload.status in (S.INTERRUPTED, S.UNHEALTHY):
            workflow_run_create(
                kind=WorkflowKind.TERMINATE, workload=workload, payload={"reason": f"migration failed: {run.error}"}
            )
            return
    provision.provision_cleanup(run)


STEPS = (
    Step(
        "wait-for-final-checkpoint",
        wait_for_final_checkpoint,
        poll=Poll(every_seconds=1, max_checks=200, timeout_message="Timeout waiting for the final checkpoint"),
    ),
    Step(
        "terminate-old-instance",
        terminate_old_instance,
        retry=RetryPolicy(limit=3, delay_seconds=5, retry_on=(TransientCloudError,)),
    ),
    Step("update-status-provisioning", update_status_provisioning, follows=True),
    # The placement and start-up steps of a provisioning run, by name (storage is already set up).
    provision.FIND_PLACEMENT,
    dataclasses.replace(provision.PROVISION_CLOUD_RESOURCES, body=provision_new_instance),
    provision.WAIT_FOR_INSTANCE,
    provision.WAIT_FOR_WORKLOAD_READY,
    provision.REGISTER_ROUTING,
    provision.START_HEALTH_MONITORING,
    Step("notify-customer", notify_migrated, follows=True),
)

MIGRATE = register(Workflow(kind=WorkflowKind.MIGRATE, steps=STEPS, cleanup=migrate_cleanup))
