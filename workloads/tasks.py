"""Celery tasks: thin wrappers that take ids and call one service."""

from __future__ import annotations

from celery import shared_task
from django.db import DatabaseError

from arbitrage.pacing import UPKEEP_PACE, paced
from placement.clouds.base import TransientCloudError
from workloads import notifications, recovery, services
from workloads.recovery import health_sweep_run
from workloads.workflows import engine, readiness

# Workflow steps: acks_late + reject_on_worker_lost (settings) so a worker that
# dies mid-step leaves the message to be redelivered; steps are idempotent.


@shared_task(bind=True, max_retries=None, name="workloads.workflow_step")
def workflow_step(self, run_id: str, step_name: str, generation: int):
    outcome = engine.workflow_step_execute(run_id=run_id, step_name=step_name, generation=generation)
    if isinstance(outcome, engine.RetryLater):
        raise self.retry(countdown=outcome.countdown)
    if isinstance(outcome, engine.Stop):
        # Cut the chain: the steps after this one must not run.
        self.request.chain = None
        return None
    return outcome.result


@shared_task(
    name="workloads.workflow_cleanup",
    autoretry_for=(TransientCloudError, DatabaseError),
    retry_backoff=5,
    retry_backoff_max=300,
    max_retries=10,
)
def workflow_cleanup(run_id: str) -> None:
    engine.workflow_cleanup_execute(run_id=run_id)


@shared_task(name="workloads.workflow_resume_stalled")
def workflow_resume_stalled() -> int:
    return len(engine.workflow_resume_stalled())


@shared_task(bind=True, name="workloads.notification_deliver", max_retries=notifications.MAX_DELIVERY_ATTEMPTS)
def notification_deliver(self, notification_id: str) -> None:
    try:
        notifications.notification_deliver(notification_id=notification_id)
    except notifications.WebhookDeliveryError as error:
        if self.request.retries >= self.max_retries:
            notifications.notification_give_up(notification_id=notification_id, error=str(error))
            return
        # Exponential backoff: 2, 4, 8, ... seconds (scaled), capped at 10 minutes.
        countdown = min(engine.scaled(2 ** (self.request.retries + 1)), 600)
        raise self.retry(countdown=countdown) from None


@shared_task(name="workloads.health_sweep", ignore_result=True)
def health_sweep() -> dict:
    report = paced("health-sweep", health_sweep_run)
    return report.__dict__ if report is not None else {"skipped": 1}


@shared_task(name="workloads.readiness_sweep", ignore_result=True)
def readiness_sweep() -> dict:
    return readiness.readiness_sweep_tick()


@shared_task(name="workloads.checkpoint_request", ignore_result=True)
def checkpoint_request(workload_id: str) -> bool:
    return recovery.checkpoint_request(workload_id=workload_id)


@shared_task(name="workloads.logs_collect", ignore_result=True)
def logs_collect() -> int:
    return paced("logs-collect", services.workload_outputs_collect, pace=UPKEEP_PACE) or 0


@shared_task(name="workloads.logs_expire", ignore_result=True)
def logs_expire() -> int:
    return services.workload_logs_expire()
