"""The durable step engine, executed step by step in the test process."""

from datetime import timedelta

import pytest
from django.db import OperationalError
from django.utils import timezone

from placement.clouds.base import TransientCloudError
from tests.factories import WorkloadFactory
from workloads.models import RunStatus, StepStatus, WorkflowRun, WorkflowStep, WorkloadEvent
from workloads.workflows import engine
from workloads.workflows.engine import (
    Done,
    NotYet,
    Poll,
    RetryLater,
    RetryPolicy,
    Rewind,
    Step,
    StepFailed,
    Stop,
    Workflow,
    workflow_resume_stalled,
    workflow_run_cancel,
    workflow_step_execute,
)

calls: list[str] = []
cleanups: list[str] = []


def first(ctx):
    calls.append("first")
    ctx.on_commit_effects(lambda: WorkloadEvent.objects.create(workload=ctx.workload, kind="info", name="effect"))
    return {"n": 1}


def second(ctx):
    calls.append("second")
    return {"previous": ctx.result_of("first")["n"] + 1}


def flaky(ctx):
    calls.append("flaky")
    raise TransientCloudError("throttled")


def waiting(ctx):
    calls.append("waiting")
    raise NotYet("not ready")


def broken_effect(ctx):
    def effect():
        WorkloadEvent.objects.create(workload=ctx.workload, kind="info", name="half-done")
        raise OperationalError("database went away")

    ctx.on_commit_effects(effect)
    return {"never": "stored"}


def gives_up(ctx):
    raise StepFailed("nothing fits")


def goes_back(ctx):
    raise Rewind("second", "capacity gone after the create")


TEST_FLOW = engine.register(
    Workflow(
        kind="test-flow",
        steps=(
            Step("first", first),
            Step("second", second),
            Step(
                "flaky",
                flaky,
                retry=RetryPolicy(limit=2, delay_seconds=10, exponential=True, retry_on=(TransientCloudError,)),
            ),
            Step("waiting", waiting, poll=Poll(every_seconds=5, max_checks=3, timeout_message="Timeout waiting")),
            Step("broken-effect", broken_effect),
            Step("gives-up", gives_up),
            Step("goes-back", goes_back),
        ),
        cleanup=lambda run: cleanups.append(str(run.id)),
    )
)


@pytest.fixture(autouse=True)
def reset():
    calls.clear()
    cleanups.clear()


@pytest.fixture
def run(db, django_capture_on_commit_callbacks):
    workload = WorkloadFactory()
    with django_capture_on_commit_callbacks(execute=False):
        return engine.workflow_run_create(kind="test-flow", workload=workload)


def execute(run, name):
    return workflow_step_execute(run_id=run.id, step_name=name, generation=run.chain_generation)


def test_a_run_has_one_row_per_step_in_order(run):
    assert list(run.steps.order_by("position").values_list("name", flat=True)) == list(TEST_FLOW.step_names)
    assert set(run.steps.values_list("status", flat=True)) == {StepStatus.PENDING}


def test_a_succeeded_step_is_never_run_again_and_returns_its_stored_result(run):
    assert execute(run, "first") == Done({"n": 1})
    assert execute(run, "first") == Done({"n": 1})
    assert calls == ["first"]
    assert WorkloadEvent.objects.filter(name="effect").count() == 1
    assert execute(run, "second") == Done({"previous": 2})


def test_a_step_result_and_its_effects_are_stored_together_or_not_at_all(run, settings):
    settings.WORKFLOW_TIME_SCALE = 1
    outcome = execute(run, "broken-effect")
    assert isinstance(outcome, RetryLater)
    step = WorkflowStep.objects.get(run=run, name="broken-effect")
    assert step.status == StepStatus.RUNNING and step.result is None
    assert not WorkloadEvent.objects.filter(name="half-done").exists()


def test_named_errors_are_retried_with_exponential_backoff_then_give_up(
    run, settings, django_capture_on_commit_callbacks
):
    settings.WORKFLOW_TIME_SCALE = 1
    assert execute(run, "flaky") == RetryLater(10)
    assert execute(run, "flaky") == RetryLater(20)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        outcome = execute(run, "flaky")
    assert isinstance(outcome, Stop)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.failed_step == "flaky"
    assert "throttled (after 3 attempts)" in run.error
    assert len(callbacks) == 1  # the cleanup task, enqueued after commit


def test_a_wait_rechecks_on_its_interval_and_times_out(run, settings):
    settings.WORKFLOW_TIME_SCALE = 0.5
    assert execute(run, "waiting") == RetryLater(2.5)
    assert execute(run, "waiting") == RetryLater(2.5)
    assert isinstance(execute(run, "waiting"), Stop)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.error == "Timeout waiting (not ready)"
    assert WorkflowStep.objects.get(run=run, name="waiting").attempts == 3


def test_a_step_that_gives_up_records_which_step_and_why(run):
    assert isinstance(execute(run, "gives-up"), Stop)
    run.refresh_from_db()
    assert (run.status, run.failed_step, run.error) == (RunStatus.FAILED, "gives-up", "nothing fits")
    assert WorkflowStep.objects.get(run=run, name="gives-up").status == StepStatus.FAILED


def test_cleanup_runs_the_workflows_cleanup(run):
    execute(run, "gives-up")
    engine.workflow_cleanup_execute(run_id=run.id)
    assert cleanups == [str(run.id)]


def test_steps_of_a_cancelled_run_do_not_run(run):
    workflow_run_cancel(workload_id=run.workload_id, kind="test-flow", reason="user cancelled")
    assert isinstance(execute(run, "first"), Stop)
    assert calls == []


def test_tasks_of_a_superseded_chain_stop(run):
    WorkflowRun.objects.filter(id=run.id).update(chain_generation=3)
    assert isinstance(execute(run, "first"), Stop)
    assert calls == []


def test_resume_restarts_a_stalled_run_from_its_first_unfinished_step(run, django_capture_on_commit_callbacks):
    execute(run, "first")
    WorkflowRun.objects.filter(id=run.id).update(heartbeat_at=timezone.now() - timedelta(hours=1))

    with django_capture_on_commit_callbacks(execute=False) as enqueued:
        resumed = workflow_resume_stalled(stalled_for=timedelta(minutes=2))

    assert resumed == [run.id]
    assert len(enqueued) == 1
    run.refresh_from_db()
    assert run.chain_generation == 1
    event = WorkloadEvent.objects.get(name="workflow-resumed")
    assert event.message == "test-flow run resumed at second"


def test_resume_leaves_runs_that_are_making_progress_alone(run):
    execute(run, "first")
    assert workflow_resume_stalled(stalled_for=timedelta(minutes=2)) == []


def test_a_rewind_reruns_the_workflow_from_an_earlier_step_on_a_new_chain(run, django_capture_on_commit_callbacks):
    execute(run, "first")
    execute(run, "second")
    with django_capture_on_commit_callbacks(execute=False) as enqueued:
        outcome = execute(run, "goes-back")
    assert outcome == Stop("rewound to second")
    assert len(enqueued) == 1
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING and run.chain_generation == 1 and run.payload["rewinds"] == 1
    statuses = dict(run.steps.values_list("name", "status"))
    assert statuses["first"] == StepStatus.SUCCEEDED
    assert statuses["second"] == StepStatus.PENDING and statuses["goes-back"] == StepStatus.PENDING
    assert execute(run, "second") == Done({"previous": 2})
    assert calls == ["first", "second", "second"]
    assert "capacity gone after the create; back to second" in WorkloadEvent.objects.get(name="goes-back").message


def test_a_run_that_keeps_rewinding_gives_up(run, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        for _ in range(engine.MAX_REWINDS):
            run.refresh_from_db()
            assert execute(run, "goes-back") == Stop("rewound to second")
        run.refresh_from_db()
        execute(run, "goes-back")
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and f"gave up after {engine.MAX_REWINDS} fresh placements" in run.error
