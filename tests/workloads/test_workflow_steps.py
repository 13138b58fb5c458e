"""Each workflow runs the design's steps, named in an explicit list, in order."""

from workloads.models import WorkflowKind
from workloads.workflows.engine import WORKFLOWS


def names(kind: str) -> list[str]:
    return [step.name for step in WORKFLOWS[kind].steps]


def test_provisioning_runs_the_design_steps_in_order():
    assert names(WorkflowKind.PROVISION) == [
        "validate-quotas",
        "find-placement",
        "update-status-provisioning",
        "provision-cloud-resources",
        "wait-for-instance",
        "wait-for-workload-ready",
        "register-routing",
        "initialize-storage",
        "start-health-monitoring",
        "notify-customer",
    ]


def test_termination_runs_the_design_steps_in_order():
    assert names(WorkflowKind.TERMINATE) == [
        "get-workload",
        "update-status-stopping",
        "stop-health-monitoring",
        "terminate-instance",
        "schedule-storage-cleanup",
        "remove-routing",
        "update-final-status",
        "record-billing",
    ]


def test_a_migration_reuses_the_provisioning_steps_it_names():
    assert names(WorkflowKind.MIGRATE) == [
        "wait-for-final-checkpoint",
        "terminate-old-instance",
        "update-status-provisioning",
        "find-placement",
        "provision-cloud-resources",
        "wait-for-instance",
        "wait-for-workload-ready",
        "register-routing",
        "start-health-monitoring",
        "notify-customer",
    ]
    provisioning = {step.name: step for step in WORKFLOWS[WorkflowKind.PROVISION].steps}
    reused = [step for step in WORKFLOWS[WorkflowKind.MIGRATE].steps if step.name in provisioning]
    # The same steps (retry policy, polls, compensation), except the migration's own status and notice,
    # and its create, which also marks the move in the workload's log.
    migrate_steps = WORKFLOWS[WorkflowKind.MIGRATE].steps
    assert [step for step in reused if step is not provisioning[step.name]] == [
        migrate_steps[2],
        migrate_steps[4],
        migrate_steps[-1],
    ]
    create = provisioning["provision-cloud-resources"]
    assert (migrate_steps[4].retry, migrate_steps[4].poll, migrate_steps[4].compensate) == (
        create.retry,
        create.poll,
        create.compensate,
    )
