"""Beat tasks over the whole fleet: thin wrappers that call one service.

The task names keep the ``workloads.`` prefix they were scheduled under (the beat
schedules in the database name them).
"""

from __future__ import annotations

from celery import shared_task

from arbitrage.pacing import UPKEEP_PACE, paced
from fleet import controller
from fleet.reconciliation import cloud_interruption_warnings_poll
from fleet.reconciliation import cloud_reconcile as reconcile


@shared_task(name="workloads.cloud_reconcile", ignore_result=True)
def cloud_reconcile() -> dict:
    report = reconcile()
    return {action: report.count(action) for action in ("terminate", "wait", "interrupt", "error")}


@shared_task(name="workloads.cloud_interruption_warnings", ignore_result=True)
def cloud_interruption_warnings() -> list[str]:
    return cloud_interruption_warnings_poll()


@shared_task(name="workloads.arbitrage_tick", ignore_result=True)
def arbitrage_tick() -> dict:
    report = paced("arbitrage-tick", controller.arbitrage_tick, pace=UPKEEP_PACE)
    return {"looked_at": report.looked_at, **report.actions} if report is not None else {"skipped": 1}
