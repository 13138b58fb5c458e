"""Deadlines and capacity: what a job needs, its progress, waiting for capacity, on demand for a deadline."""

import json
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.tokens import agent_token_for
from billing.models import UsageRecord
from fleet import controller
from placement.clouds import local
from placement.models import PoolBlock
from placement.policy import Keep, LaunchOnDemand, LaunchSpot
from placement.services import pool_unblock
from tests.factories import WorkloadFactory, WorkloadInstanceFactory, customer_with_key
from tests.live import wait_until
from tests.workloads.test_provision import api_for, reaches, submit
from workloads.models import (
    WAITING_FOR_CAPACITY,
    Notification,
    NotificationType,
    Workload,
    WorkloadEvent,
    WorkloadInstance,
    WorkloadStatus,
)
from workloads.workflows.provision import capacity_backoff

S = WorkloadStatus
URL = "/api/v1/workloads"
BASE = {"name": "trainer", "requirements": {"vcpu": 2, "memory_gb": 4}}


def post(client: APIClient, **fields):
    return client.post(URL, data=json.dumps({**BASE, **fields}), content_type="application/json")


@pytest.fixture
def client(db):
    _, key = customer_with_key()
    return api_for(key)


def in_seconds(seconds: float) -> str:
    return (timezone.now() + timedelta(seconds=seconds)).isoformat()


# --- what the customer says the job needs ----------------------------------------------------


def test_a_deadline_in_the_past_is_refused(client):
    answer = post(client, expected_duration_seconds=60, deadline=in_seconds(-60))
    assert answer.status_code == 400
    assert answer.json()["error"]["fields"]["deadline"] == ["The deadline is in the past."]


def test_a_deadline_shorter_than_the_work_and_one_launch_is_refused(client, settings):
    settings.LAUNCH_OVERHEAD_SECONDS = 600
    answer = post(client, expected_duration_seconds=3600, deadline=in_seconds(3600 + 300))
    assert answer.status_code == 400
    assert "Too soon" in answer.json()["error"]["fields"]["deadline"][0]


@pytest.mark.parametrize("duration", [0, -5, 1.5, "3600", True])
def test_a_duration_that_is_not_a_positive_whole_number_of_seconds_is_refused(client, duration):
    answer = post(client, expected_duration_seconds=duration)
    assert answer.status_code == 400
    assert "expected_duration_seconds" in answer.json()["error"]["fields"]


def test_a_deadline_needs_the_expected_duration(client):
    answer = post(client, deadline=in_seconds(86_400))
    assert answer.status_code == 400
    assert "expected_duration_seconds" in answer.json()["error"]["fields"]


def test_a_deadline_without_an_offset_is_refused(client):
    answer = post(client, expected_duration_seconds=60, deadline="2030-01-01T00:00:00")
    assert answer.status_code == 400
    assert "offset" in answer.json()["error"]["fields"]["deadline"][0]


def test_on_demand_fallback_defaults_to_allowed_with_a_deadline_and_refused_without(client, settings):
    settings.LAUNCH_OVERHEAD_SECONDS = 60
    with_deadline = post(client, expected_duration_seconds=600, deadline=in_seconds(7200)).json()
    without = post(client, name="other", expected_duration_seconds=600).json()
    forbidden = post(
        client, name="third", expected_duration_seconds=600, deadline=in_seconds(7200), on_demand_fallback=False
    ).json()
    assert with_deadline["on_demand_fallback"] is True and with_deadline["expected_duration_seconds"] == 600
    assert without["on_demand_fallback"] is False and without["deadline"] is None
    assert forbidden["on_demand_fallback"] is False


def test_the_detail_shows_progress_remaining_time_the_deadline_and_the_market(client, settings):
    settings.LAUNCH_OVERHEAD_SECONDS = 60
    created = post(client, expected_duration_seconds=3600, deadline=in_seconds(7200)).json()
    workload = Workload.objects.get(id=created["id"])
    WorkloadInstanceFactory(workload=workload, market="on_demand", healthy_at=timezone.now() - timedelta(seconds=100))
    Workload.objects.filter(id=workload.id).update(status=S.RUNNING)

    detail = client.get(f"{URL}/{workload.id}").json()

    assert 99 <= detail["progress_seconds"] <= 110  # run time since it became healthy
    assert 3490 <= detail["remaining_seconds"] <= 3501
    assert detail["on_track"] is True and detail["market"] == "on_demand"
    assert detail["deadline"] == created["deadline"]


# --- progress reports -------------------------------------------------------------------------


def test_the_agent_reports_progress_and_the_detail_shows_it(client, db):
    workload = WorkloadFactory(status=S.RUNNING, expected_duration_seconds=100)
    agent = APIClient()
    agent.credentials(HTTP_AUTHORIZATION=f"Bearer {agent_token_for(workload.id)}")

    answer = agent.post("/api/v1/agent/progress", data={"completed_seconds": 42}, format="json")
    refused = agent.post("/api/v1/agent/progress", data={"completed_seconds": -1}, format="json")

    assert answer.status_code == 202 and answer.json()["progress_seconds"] == 42
    assert refused.status_code == 400
    workload.refresh_from_db()
    assert workload.progress_reported and workload.progress_seconds == 42


def test_a_finished_job_is_terminated(db, django_capture_on_commit_callbacks):
    workload = WorkloadFactory(status=S.RUNNING)
    agent = APIClient()
    agent.credentials(HTTP_AUTHORIZATION=f"Bearer {agent_token_for(workload.id)}")
    with django_capture_on_commit_callbacks(execute=False):
        answer = agent.post("/api/v1/agent/progress", data={"completed_seconds": 7, "finished": True}, format="json")
    assert answer.status_code == 202
    workload.refresh_from_db()
    assert workload.status == S.STOPPING and "Finished" in workload.termination_reason


# --- waiting, the backoff and the controller's reading of the policy ---------------------------------


def test_the_capacity_backoff_starts_within_a_minute_doubles_and_is_capped(settings):
    settings.WORKFLOW_TIME_SCALE = 1
    settings.CAPACITY_RETRY_FIRST_SECONDS = 30
    settings.CAPACITY_RETRY_MAX_SECONDS = 600
    first = [capacity_backoff(1) for _ in range(50)]
    assert all(24 <= delay <= 30 for delay in first) and len(set(first)) > 1  # jittered
    assert 48 <= capacity_backoff(2) <= 60
    assert all(480 <= capacity_backoff(attempt) <= 600 for attempt in (6, 10, 40))


def test_a_spot_launch_whose_pools_all_refused_is_taken_as_its_otherwise():
    refused = {"a", "b"}
    on_demand = LaunchSpot("a", fallbacks=("b",), otherwise=LaunchOnDemand("c"))
    assert controller._target(on_demand, refused=refused) == ("on_demand", "c")
    assert controller._target(LaunchSpot("a", fallbacks=("b",), otherwise=Keep()), refused=refused) == (None, None)
    assert controller._target(LaunchSpot("a", fallbacks=("z",)), refused=refused) == ("spot", "a")


def test_a_decision_reads_in_numbers():
    from placement.policy import Observation, Pool

    observation = Observation(
        elapsed=3600,
        progress=600,
        job_length=7200,
        deadline=14_400,
        restart_overhead=600,
        market=None,
        pool=None,
        starting=True,
        preempted=False,
        pools=(Pool("aws/us-east-1/us-east-1a/p3.2xlarge", 0.9, 3.06, refused=True),),
    )
    reason = controller.decision_reason(
        observation=observation, market="on_demand", pool="aws/us-east-1/us-east-1a/p3.2xlarge", verb="launch"
    )
    assert reason == (
        "The arbitrage policy launches it to on-demand in aws/us-east-1/us-east-1a/p3.2xlarge: 3.0600 $/h; "
        "1 of 1 spot pools refused capacity recently; 600 s of 7,200 s done, 1,200 s behind the line to the "
        "deadline, 3.00 h left."
    )


# --- end to end: a real worker, the local cloud, injected capacity faults, a short clock --------


FAST = {
    "LAUNCH_OVERHEAD_SECONDS": "2",
    "POOL_BLOCK_SECONDS": "2",
    "CAPACITY_RETRY_FIRST_SECONDS": "20",  # x 0.05 (the test clock): 1 s
    "CAPACITY_RETRY_MAX_SECONDS": "60",  # 3 s
    "ARBITRAGE_TICK_SECONDS": "1",
}


def _worker_on(settings, live_server, worker_factory, clock: dict[str, str]) -> None:
    for name, value in clock.items():
        setattr(settings, name, float(value) if "RETRY" in name else int(value))
    settings.PUBLIC_API_URL = live_server.url
    worker_factory(env={**clock, "PUBLIC_API_URL": live_server.url})


@pytest.fixture
def fast_clock(settings, live_server, worker_factory):
    _worker_on(settings, live_server, worker_factory, FAST)


@pytest.fixture
def fast_clock_lasting_blocks(settings, live_server, worker_factory):
    """The fast clock, but a refused pool stays blocked until the test lifts it: capacity comes back
    when the test says so, not when a two-second block happens to expire under a slow machine."""
    _worker_on(settings, live_server, worker_factory, {**FAST, "POOL_BLOCK_SECONDS": "3600"})


def spot_comes_back() -> None:
    """Capacity returns, and the operator lifts the blocks it left (the admin's "unblock")."""
    local.faults_clear()
    for block in PoolBlock.objects.all():
        pool_unblock(
            provider=block.provider,
            region=block.region,
            availability_zone=block.availability_zone,
            instance_type=block.instance_type,
        )


def tick_until(predicate, *, timeout: float, what: str):
    """Run the controller once a second (what beat does every ARBITRAGE_TICK_SECONDS) until ``predicate`` holds."""

    def ticked():
        controller.arbitrage_tick()
        return predicate()

    return wait_until(ticked, timeout=timeout, interval=1.0, what=what)


def live_instance(workload: Workload, market: str) -> WorkloadInstance | None:
    return WorkloadInstance.objects.filter(
        workload=workload, market=market, terminated_at__isnull=True, healthy_at__isnull=False
    ).first()


@pytest.mark.django_db(transaction=True)
def test_a_deadline_job_runs_on_demand_while_spot_is_gone_moves_to_spot_when_ahead_and_finishes(
    catalog, fast_clock_lasting_blocks, local_cloud_clean
):
    local.faults_set(no_capacity_pools=[{}])  # every pool refuses spot
    _, key = customer_with_key()
    workload = submit(
        api_for(key),
        {
            **BASE,
            "expected_duration_seconds": 20,
            "deadline": in_seconds(150),
            "config": {
                "storage": {"enabled": True, "quota_gb": 1},
                "env": {"AGENT_WORK_SECONDS": "20", "AGENT_PROGRESS_SECONDS": "1", "AGENT_CHECKPOINT_SECONDS": "1"},
            },
        },
    )

    wait_until(
        lambda: WorkloadEvent.objects.filter(workload=workload, name="waiting-for-capacity").exists(),
        timeout=60,
        what="the wait for capacity",
    )
    on_demand = tick_until(lambda: live_instance(workload, "on_demand"), timeout=90, what="an on-demand instance")
    assert reaches(workload, S.RUNNING, S.FAILED) == S.RUNNING, workload.failure_reason

    spot_comes_back()
    spot = tick_until(lambda: live_instance(workload, "spot"), timeout=120, what="the move back to spot")
    assert spot.created_at > on_demand.created_at

    assert reaches(workload, S.TERMINATED, S.FAILED, timeout=120) == S.TERMINATED, workload.failure_reason
    workload.refresh_from_db()
    assert "Finished" in workload.termination_reason
    assert workload.terminated_at < workload.deadline
    assert workload.progress_seconds >= 20
    bill = wait_until(lambda: UsageRecord.objects.filter(instance=on_demand).first(), what="the on-demand bill")
    assert bill.spot_price_per_hour == on_demand.on_demand_price  # billed at the on-demand price
    assert Notification.objects.filter(workload=workload, type=NotificationType.WORKLOAD_WAITING).count() == 1
    decisions = list(
        WorkloadEvent.objects.filter(workload=workload, name="arbitrage-decision").values_list("message", flat=True)
    )
    assert any("to on-demand" in decision and "refused capacity" in decision for decision in decisions), decisions
    assert any("moves it to spot" in decision for decision in decisions), decisions


@pytest.mark.django_db(transaction=True)
def test_without_a_deadline_a_workload_waits_out_a_capacity_crunch_and_then_runs(
    catalog, fast_clock, local_cloud_clean, admin_client
):
    local.faults_set(no_capacity_pools=[{}])
    _, key = customer_with_key()
    client = api_for(key)
    workload = submit(client)

    detail = wait_until(
        lambda: (
            (answer := client.get(f"{URL}/{workload.id}").json())["status_reason"] == WAITING_FOR_CAPACITY and answer
        ),
        timeout=60,
        what="the workload waiting for capacity",
    )
    assert detail["status"] == S.PROVISIONING and detail["next_attempt_at"]
    page = admin_client.get(f"/admin/workloads/workload/{workload.id}/change/").content.decode()
    assert WAITING_FOR_CAPACITY in page

    crunch_ends = time.monotonic() + 5
    tick_until(lambda: time.monotonic() > crunch_ends, timeout=30, what="the crunch")
    workload.refresh_from_db()
    assert workload.status == S.PROVISIONING  # still waiting: never FAILED, never on demand
    assert not WorkloadInstance.objects.filter(workload=workload, market="on_demand").exists()

    local.faults_clear()
    assert reaches(workload, S.RUNNING, S.FAILED, timeout=90) == S.RUNNING, workload.failure_reason
    workload.refresh_from_db()
    assert workload.status_reason == "" and live_instance(workload, "spot") is not None


def test_an_on_demand_workload_cannot_be_given_a_spot_interruption(db):
    from arbitrage.errors import DomainError
    from workloads import recovery

    instance = WorkloadInstanceFactory(market="on_demand", workload=WorkloadFactory(status=S.RUNNING))
    with pytest.raises(DomainError, match="on-demand"):
        recovery.workload_simulate_interruption(workload_id=instance.workload_id, grace_seconds=5)


@pytest.mark.django_db(transaction=True)
def test_a_preemption_while_the_instance_boots_places_the_workload_again(catalog, worker_factory, local_cloud_clean):
    worker_factory(env={"LOCAL_CLOUD_BOOT_DELAY_MS": "4000"})  # time to reclaim it before it is up
    _, key = customer_with_key()
    workload = submit(api_for(key))
    first = wait_until(lambda: WorkloadInstance.objects.filter(workload=workload).first(), what="the first instance")

    local.interrupt(first.instance_id)

    assert reaches(workload, S.RUNNING, S.FAILED, timeout=120) == S.RUNNING, workload.failure_reason
    second = WorkloadInstance.objects.get(workload=workload, terminated_at__isnull=True)
    assert second.instance_id != first.instance_id
    assert PoolBlock.objects.filter(
        provider=first.provider, region=first.region, instance_type=first.instance_type, until__gt=timezone.now()
    ).exists()
    assert WorkloadEvent.objects.filter(workload=workload, message__contains="preempted while starting").exists()


# --- what the fleet learns of a pool -----------------------------------------------------------


def test_a_preemption_warns_every_other_workload_on_spot_in_that_pool(db, django_capture_on_commit_callbacks):
    from workloads import recovery

    def running(market: str = "spot") -> WorkloadInstance:
        return WorkloadInstanceFactory(
            workload=WorkloadFactory(status=S.RUNNING), market=market, availability_zone="us-east-1a"
        )

    reclaimed, neighbour, on_demand = running(), running(), running("on_demand")
    elsewhere = WorkloadInstanceFactory(workload=WorkloadFactory(status=S.RUNNING), availability_zone="us-east-1b")

    with django_capture_on_commit_callbacks(execute=True):
        assert recovery.workload_interrupt(workload_id=reclaimed.workload_id, signal="cloud")

    reclaimed.refresh_from_db()
    assert reclaimed.preempted_at is not None
    warned = set(WorkloadEvent.objects.filter(name="pool-preemption-warning").values_list("workload_id", flat=True))
    assert warned == {neighbour.workload_id}
    assert on_demand.workload_id not in warned and elsewhere.workload_id not in warned


def test_an_ended_instance_goes_into_its_pools_statistics_once(db):
    from placement.models import PoolStats
    from workloads.services import instance_release_record

    healthy = timezone.now() - timedelta(hours=3)
    instance = WorkloadInstanceFactory(
        healthy_at=healthy,
        preempted_at=healthy + timedelta(hours=2),
        terminated_at=healthy + timedelta(hours=2, minutes=1),
        billed=False,
    )
    instance_release_record(instance=instance)
    instance_release_record(instance=instance)  # released again (a retried step): counted once

    stats = PoolStats.objects.get(instance_type=instance.instance_type, availability_zone=instance.availability_zone)
    assert stats.instances_seen == 1 and stats.preemptions_total == 1
    assert stats.exposure_seconds == pytest.approx(2 * 3600, rel=0.01)
    assert UsageRecord.objects.filter(instance=instance).count() == 1
