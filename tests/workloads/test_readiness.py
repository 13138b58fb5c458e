"""The readiness sweep wakes runs waiting for their workload's health check (workloads/workflows/readiness.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.factories import customer_with_key
from tests.live import wait_until
from workloads.models import StepStatus, WorkflowKind, WorkflowRun, WorkloadStatus
from workloads.services import workload_create
from workloads.workflows import engine
from workloads.workflows.readiness import readiness_sweep_run, sweep_watching

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def chains(monkeypatch) -> list[tuple[tuple[str, ...], int]]:
    """The chains the runs would enqueue (names, generation); none reaches a broker: the test runs them."""
    enqueued: list[tuple[tuple[str, ...], int]] = []
    monkeypatch.setattr(engine, "_enqueue_chain", lambda run_id, names, gen: enqueued.append((names, gen)))
    return enqueued


def test_a_waiting_run_goes_on_when_a_sweep_sees_its_instance_up_and_not_before(
    settings, catalog, local_cloud_clean, chains
):
    settings.LOCAL_CLOUD_BOOT_DELAY_MS = 1500  # pending for a while: the first checks are too early
    settings.READINESS_POLL_SECONDS = 60
    customer, _ = customer_with_key()
    workload, _ = workload_create(
        customer=customer, name="booting", requirements={"vcpu": 2, "memory_gb": 4}, config={"health_check_port": 8080}
    )
    run = WorkflowRun.objects.get(workload=workload, kind=WorkflowKind.PROVISION)
    [(heads, generation)] = chains
    kicks = 0
    while True:
        for head in heads:
            outcome = engine.workflow_step_execute(run_id=run.id, step_name=head, generation=generation)
            if not isinstance(outcome, engine.Done):
                break
        if isinstance(outcome, engine.Done):
            break
        assert isinstance(outcome, engine.RetryLater), outcome
        if kicks == 0 and not sweep_watching():
            # No sweep has run yet: the wait re-checks on its own, every 5 s.
            assert outcome.countdown == engine.scaled(5)
        else:
            # Its own re-check is the slow fallback: the sweep is what wakes it.
            assert outcome.countdown == engine.scaled(settings.READINESS_POLL_SECONDS)
        waiting = run.steps.get(status=StepStatus.RUNNING).name
        assert waiting in ("wait-for-instance", "wait-for-workload-ready")
        chains.clear()
        wait_until(lambda: readiness_sweep_run()["woken"], timeout=30, interval=0.2, what=f"a sweep to end {waiting}")
        kicks += 1
        [(heads, woken)] = chains  # a chain from the wait, now, of the same generation
        assert heads[0] == waiting and woken == generation
        assert readiness_sweep_run()["woken"] == 0  # not fed again while its wake is queued
        chains.clear()

    # The run's own countdown re-check, when it comes, finds the steps done: nothing happens twice.
    assert isinstance(
        engine.workflow_step_execute(run_id=run.id, step_name=waiting, generation=generation), engine.Done
    )
    workload.refresh_from_db()
    assert workload.status == WorkloadStatus.RUNNING and kicks >= 1
    assert readiness_sweep_run() == {"starting": 0, "booting": 0, "woken": 0}


def test_a_wait_past_its_limit_is_woken_and_gives_up(settings, catalog, local_cloud_clean, chains):
    settings.LOCAL_CLOUD_BOOT_DELAY_MS = 600_000  # never up within the test
    customer, _ = customer_with_key()
    workload, _ = workload_create(customer=customer, name="stuck", requirements={"vcpu": 2, "memory_gb": 4}, config={})
    run = WorkflowRun.objects.get(workload=workload, kind=WorkflowKind.PROVISION)
    [(heads, generation)] = chains
    for head in heads:
        outcome = engine.workflow_step_execute(run_id=run.id, step_name=head, generation=generation)
    assert isinstance(outcome, engine.RetryLater)
    chains.clear()
    assert readiness_sweep_run()["woken"] == 0  # still booting, within its limit

    # Its wait began longer ago than the wait's limit (5 min, scaled): the sweep wakes it to give up.
    step = run.steps.get(name="wait-for-instance")
    step.started_at -= timedelta(seconds=engine.scaled(300) + 1)
    step.save(update_fields=["started_at"])
    assert readiness_sweep_run()["woken"] == 1
    [(woken_heads, _)] = chains
    outcome = engine.workflow_step_execute(run_id=run.id, step_name=woken_heads[0], generation=generation)
    assert isinstance(outcome, engine.Stop)
    run.refresh_from_db()
    assert run.status == "failed" and "Timeout waiting for instance to start" in run.error
