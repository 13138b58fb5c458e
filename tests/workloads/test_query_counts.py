"""What one provisioning run and one termination run cost in database queries.

The run's chain executes here, task by task as a worker runs it, on the local cloud; every
query of every try is counted, waits included. A wait re-checks only once what it waits for
holds (as its countdown would), so a run makes one health check too early: the instance's
agent takes longer to start than the create takes to return.
"""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass, field

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.factories import customer_with_key
from tests.live import wait_until
from workloads.models import RunStatus, StepStatus, WorkflowKind, WorkflowRun, Workload, WorkloadStatus
from workloads.services import workload_create, workload_terminate
from workloads.workflows import engine

pytestmark = pytest.mark.django_db(transaction=True)

S = WorkloadStatus
PROVISIONING_MAX_QUERIES = 40
TERMINATION_MAX_QUERIES = 45


@dataclass
class RunCost:
    """Queries per try of each task (named by the steps it ran) and the chains the runs enqueued."""

    tries: list[tuple[str, int]] = field(default_factory=list)
    chains: list[tuple[str, ...]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(count for _, count in self.tries)


@pytest.fixture
def chains(monkeypatch) -> list[tuple[str, ...]]:
    """The chains the runs would enqueue; none reaches a broker, so the steps run only here."""
    enqueued: list[tuple[str, ...]] = []
    monkeypatch.setattr(engine, "_enqueue_chain", lambda run_id, names, generation: enqueued.append(names))
    return enqueued


@pytest.fixture
def fast_local_cloud(settings, catalog, local_cloud_clean):
    settings.LOCAL_CLOUD_BOOT_DELAY_MS = 0
    settings.WORKFLOW_TIME_SCALE = 1  # the stall clock as in production (its heartbeat writes too)


def run_counted(run: WorkflowRun, chains: list[tuple[str, ...]]) -> RunCost:
    """Execute the chain ``run`` enqueued, each task retried until done, counting every try's queries."""
    cost = RunCost(chains=list(chains))
    [heads] = cost.chains
    workflow = engine.WORKFLOWS[run.kind]
    for head in heads:
        while True:
            with CaptureQueriesContext(connection) as captured:
                outcome = engine.workflow_step_execute(run_id=run.id, step_name=head, generation=run.chain_generation)
            cost.tries.append(("+".join(workflow.batch(head)), len(captured.captured_queries)))
            if isinstance(outcome, engine.Done):
                break
            assert isinstance(outcome, engine.RetryLater), (head, outcome)
            awaited_holds(run)
    return cost


def awaited_holds(run: WorkflowRun) -> None:
    """Until what the waiting step checks holds (the instance answers ``/health``)."""
    waiting = run.steps.filter(status=StepStatus.RUNNING).values_list("name", flat=True).first()
    if waiting == "wait-for-workload-ready":
        address = run.steps.get(name="wait-for-instance").result["address"]
        wait_until(lambda: answers(f"http://{address}/health"), timeout=30, what="the instance's health endpoint")


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


def provision_counted(chains: list[tuple[str, ...]]) -> tuple[Workload, RunCost]:
    customer, _ = customer_with_key()
    workload, _ = workload_create(
        customer=customer, name="counted", requirements={"vcpu": 2, "memory_gb": 4}, config={"health_check_port": 8080}
    )
    cost = run_counted(WorkflowRun.objects.get(workload=workload, kind=WorkflowKind.PROVISION), chains)
    workload.refresh_from_db()
    return workload, cost


def test_a_provisioning_run_costs_at_most_40_queries_in_one_task_and_a_wait(fast_local_cloud, chains):
    workload, cost = provision_counted(chains)

    assert workload.status == S.RUNNING
    # The create runs inline, in the task that found the placement, once that is recorded.
    assert cost.chains == [("validate-quotas",)]
    assert cost.tries[0][0] == "validate-quotas+find-placement+update-status-provisioning"
    assert cost.total <= PROVISIONING_MAX_QUERIES, cost.tries


def test_a_termination_run_costs_at_most_45_queries_in_two_tasks(fast_local_cloud, chains):
    workload, _ = provision_counted(chains)
    chains.clear()
    workload_terminate(workload_id=workload.id)
    run = WorkflowRun.objects.get(workload=workload, kind=WorkflowKind.TERMINATE)

    cost = run_counted(run, chains)

    workload.refresh_from_db()
    run.refresh_from_db()
    assert (workload.status, run.status) == (S.TERMINATED, RunStatus.SUCCEEDED)
    assert cost.chains == [("get-workload", "terminate-instance")]
    assert cost.total <= TERMINATION_MAX_QUERIES, cost.tries
