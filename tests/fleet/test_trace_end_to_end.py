"""The arbitrage policy measured twice: the real service on a trace-driven local cloud, and the replay of that trace.

A deadline job on V100 spot in two zones of a hand-made trace: the cheaper zone loses its capacity
part-way, the workload is reclaimed there and moves to the other zone, and finishes. The real web
(live_server), a real Celery worker and the local cloud play it on a compressed clock; the test
process plays beat (the controller's tick and the interruption-warning poll, every half second).
Then ``placement.trace_replay`` replays the same trace, converted to the wall clock, with the same
policy and launch overhead (each launch taking as long as it took here): the bills must agree within 5 %.
"""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.models import UsageRecord
from fleet import controller
from fleet.reconciliation import cloud_interruption_warnings_poll
from placement.clouds.local import trace
from placement.services import catalog_load_snapshot
from placement.trace_replay import ZoneSeries, trace_replay
from tests.factories import customer_with_key
from tests.live import wait_until
from tests.placement.traces import write_trace
from tests.workloads.test_provision import api_for, reaches, submit
from workloads.models import WorkloadInstance, WorkloadStatus

pytestmark = pytest.mark.django_db(transaction=True)

ROW_SECONDS = 195  # the shared traces' tick
SPEED = 97.5  # trace seconds per wall second: a row every 2 wall seconds
ROWS = 200
CHEAP, DEAR = "us-east-1a", "us-east-2b"
# The cheap zone has capacity for its first 10 rows (20 wall seconds), none for 20, then again.
AVAILABILITY = {CHEAP: [1] * 10 + [0] * 20 + [1] * (ROWS - 30), DEAR: [1] * ROWS}
PRICES = {CHEAP: [1.80] * ROWS, DEAR: [2.00] * ROWS}
WORK_SECONDS = 40
OVERHEAD_SECONDS = 1  # LAUNCH_OVERHEAD_SECONDS, the policy's d: about what a local launch takes to boot
PLAYED = {
    "LAUNCH_OVERHEAD_SECONDS": str(OVERHEAD_SECONDS),
    "POOL_BLOCK_SECONDS": "2",
    "ARBITRAGE_TICK_SECONDS": "1",
    "LOCAL_CLOUD_BOOT_DELAY_MS": "500",
}


def wall_series(origin: float, submitted: float) -> list[ZoneSeries]:
    """The trace's zones on the wall clock, in seconds from the job's submission."""
    loaded = trace.trace_get()
    series = []
    for zone in loaded.zones.values():
        times = tuple((at - loaded.start) / SPEED + origin - submitted for at in zone.times)
        series.append(ZoneSeries(zone.zone, times, zone.available, tuple(float(p) for p in zone.prices)))
    return series


def test_a_deadline_job_on_a_trace_costs_what_the_replay_of_that_trace_says(
    settings, tmp_path, live_server, worker_factory, local_cloud_clean
):
    availability, prices = write_trace(tmp_path, availability=AVAILABILITY, prices=PRICES, row_seconds=ROW_SECONDS)
    played = {
        **PLAYED,
        "LOCAL_CLOUD_TRACE_AVAILABILITY": str(availability),
        "LOCAL_CLOUD_TRACE_PRICES": str(prices),
        "LOCAL_CLOUD_TRACE_SPEED": str(SPEED),
        "PUBLIC_API_URL": live_server.url,
    }
    settings.LOCAL_CLOUD_TRACE_AVAILABILITY = str(availability)
    settings.LOCAL_CLOUD_TRACE_PRICES = str(prices)
    settings.LOCAL_CLOUD_TRACE_SPEED = SPEED
    settings.PUBLIC_API_URL = live_server.url
    settings.POOL_BLOCK_SECONDS = 2
    settings.LAUNCH_OVERHEAD_SECONDS = OVERHEAD_SECONDS
    settings.ARBITRAGE_TICK_SECONDS = 1
    settings.LOCAL_CLOUD_TRACE_START_ROW = 0
    trace.trace_clock_reset()
    origin = trace.trace_origin()  # the trace starts now, for the worker too (same data directory)
    catalog_load_snapshot()
    worker_factory(env=played)
    _, key = customer_with_key()
    submitted = time.time()
    deadline = timezone.now() + timedelta(seconds=4 * WORK_SECONDS)
    workload = submit(
        api_for(key),
        {
            "name": "v100-job",
            "requirements": {"vcpu": 8, "memory_gb": 61, "gpu_count": 1, "gpu_type": "V100", "providers": ["aws"]},
            "expected_duration_seconds": WORK_SECONDS,
            "deadline": deadline.isoformat().replace("+00:00", "Z"),
            "config": {
                "storage": {"enabled": True, "quota_gb": 1},
                "env": {
                    "AGENT_WORK_SECONDS": str(WORK_SECONDS),
                    "AGENT_PROGRESS_SECONDS": "1",
                    "AGENT_CHECKPOINT_SECONDS": "1",
                },
            },
            "recovery_policy": "migrate",
        },
    )

    def played_beat() -> bool:
        cloud_interruption_warnings_poll()
        controller.arbitrage_tick()
        workload.refresh_from_db()
        return workload.status in (WorkloadStatus.TERMINATED, WorkloadStatus.FAILED)

    wait_until(played_beat, timeout=6 * WORK_SECONDS, interval=0.5, what="the job to finish")
    assert reaches(workload, WorkloadStatus.TERMINATED) == WorkloadStatus.TERMINATED, workload.failure_reason
    assert workload.terminated_at < workload.deadline
    zones = [i.availability_zone for i in WorkloadInstance.objects.filter(workload=workload).order_by("created_at")]
    assert zones[0] == CHEAP and zones[-1] == DEAR, zones  # reclaimed in the cheap zone, finished in the other
    bills = wait_until(
        lambda: (
            (records := list(UsageRecord.objects.filter(workload=workload))) and len(records) == len(zones) and records
        ),
        what="every segment billed",
    )
    billed = float(sum((record.total_cost for record in bills), Decimal(0)))

    # Each launch is replayed as taking what it took here (launch to healthy), which a busy machine
    # stretches; the policy in both is told the same OVERHEAD_SECONDS.
    instances = WorkloadInstance.objects.filter(workload=workload)
    launches = [(i.healthy_at - i.billed_from).total_seconds() for i in instances if i.healthy_at]
    replayed = trace_replay(
        zones=wall_series(origin, submitted),
        on_demand_price=float(settings.LOCAL_CLOUD_TRACE_ON_DEMAND_PRICE),
        job_length=WORK_SECONDS,
        deadline=(deadline.timestamp() - submitted),
        restart_overhead=OVERHEAD_SECONDS,
        tick=0.5,
        launch_seconds=max(sum(launches) / len(launches), OVERHEAD_SECONDS),
    )

    assert [zone for _, _, zone in replayed.launches] == [CHEAP, DEAR]
    assert billed == pytest.approx(replayed.cost, rel=0.05), (billed, replayed.cost, zones)
