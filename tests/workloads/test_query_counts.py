"""What one provisioning run and one termination run cost in database queries.

The steps run here one after the other, as a worker runs them, on the local cloud; every
query of every attempt is counted. A wait that is not over yet (an instance still booting)
is a poll, counted on its own: how many a run makes depends on how long the instance takes.
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


@dataclass
class RunCost:
    """Queries per step (its successful attempt), per poll, and the chains the run enqueued."""

    steps: dict[str, int] = field(default_factory=dict)
    polls: list[int] = field(default_factory=list)
    chains: list[tuple[str, ...]] = field(default_factory=list)
    queries: dict[str, list[str]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.steps.values())


@pytest.fixture
def chains(monkeypatch) -> list[tuple[str, ...]]:
    """The chains the runs would enqueue; none reaches a broker, so the steps run only here."""
    enqueued: list[tuple[str, ...]] = []
    monkeypatch.setattr(engine, "_enqueue_chain", lambda run_id, names, generation: enqueued.append(names))
    return enqueued


def run_steps_counted(run: WorkflowRun, cost: RunCost) -> RunCost:
    """Execute ``run``'s chain here, task by task as a worker would, counting each try's queries.

    A task runs its step and the steps that follow it; ``cost.steps`` is keyed by the names it ran.
    """
    run.refresh_from_db()
    for head in engine.WORKFLOWS[run.kind].chain_heads(engine.WORKFLOWS[run.kind].step_names):
        while True:
            with CaptureQueriesContext(connection) as captured:
                outcome = engine.workflow_step_execute(run_id=run.id, step_name=head, generation=run.chain_generation)
            if isinstance(outcome, engine.Done):
                covered = "+".join(engine.WORKFLOWS[run.kind].batch(head))
                cost.steps[covered] = len(captured.captured_queries)
                cost.queries[covered] = [query["sql"] for query in captured.captured_queries]
                break
            assert isinstance(outcome, engine.RetryLater), (head, outcome)
            cost.polls.append(len(captured.captured_queries))
            cost.queries[f"poll {len(cost.polls)}"] = [query["sql"] for query in captured.captured_queries]
            awaited_holds(run)
    return cost


def awaited_holds(run: WorkflowRun) -> None:
    """Until what the waiting step checks holds (the instance answers ``/health``), as its countdown would."""
    waiting = run.steps.filter(status=StepStatus.RUNNING).values_list("name", flat=True).first()
    if waiting == "wait-for-workload-ready":
        address = run.steps.get(name="wait-for-instance").result["address"]
        wait_until(lambda: answers(f"http://{address}/health"), timeout=20, what="the instance's health endpoint")


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def fast_local_cloud(settings, catalog, local_cloud_clean):
    settings.LOCAL_CLOUD_BOOT_DELAY_MS = 0
    settings.WORKFLOW_TIME_SCALE = 0.05


def provisioned(chains: list) -> tuple[Workload, RunCost]:
    customer, _ = customer_with_key()
    cost = RunCost(chains=chains)
    workload, _ = workload_create(
        customer=customer,
        name="counted",
        requirements={"vcpu": 2, "memory_gb": 4},
        config={"health_check_port": 8080},
    )
    run_steps_counted(WorkflowRun.objects.get(workload=workload, kind=WorkflowKind.PROVISION), cost)
    workload.refresh_from_db()
    return workload, cost


def report(title: str, cost: RunCost) -> None:
    print(f"\n{title}: {cost.total} queries; polls {cost.polls}; chains {len(cost.chains)}")
    for name, sqls in cost.queries.items():
        print(f"  {name:<28} {len(sqls)}")
        for sql in sqls:
            print(f"      {sql[:220]}")


def test_measure(fast_local_cloud, chains):
    workload, cost = provisioned(chains)
    assert workload.status == S.RUNNING
    report("provision", cost)
    chains.clear()
    workload_terminate(workload_id=workload.id)
    run = WorkflowRun.objects.get(workload=workload, kind=WorkflowKind.TERMINATE)
    term = run_steps_counted(run, RunCost(chains=chains))
    report("terminate", term)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
