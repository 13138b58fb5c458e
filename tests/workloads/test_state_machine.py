"""The workload lifecycle exactly as docs/architecture.md §5 tables it."""

import threading
from itertools import product

import pytest
from django.conf import settings
from django.db import connection, connections, transaction
from django_fsm import ConcurrentTransition

from tests.factories import WorkloadFactory
from workloads import routing
from workloads.errors import TransitionRefused
from workloads.models import TRANSITIONS, Workload, WorkloadEvent, WorkloadStatus
from workloads.services import workload_terminate, workload_transition

S = WorkloadStatus

# (transition, from, to): the source's edges plus the three documented additions.
ALLOWED = {
    ("place", S.PENDING, S.PROVISIONING),
    ("fail_provisioning", S.PROVISIONING, S.FAILED),
    ("mark_ready", S.PROVISIONING, S.RUNNING),
    ("user_terminate", S.RUNNING, S.STOPPING),
    ("spot_interrupt", S.RUNNING, S.INTERRUPTED),
    ("health_check_fail", S.RUNNING, S.UNHEALTHY),
    ("cleanup_complete", S.STOPPING, S.TERMINATED),
    ("cleanup_complete", S.INTERRUPTED, S.TERMINATED),
    ("cleanup_complete", S.UNHEALTHY, S.TERMINATED),
    ("reject", S.PENDING, S.FAILED),
    ("cancel", S.PENDING, S.STOPPING),
    ("cancel", S.PROVISIONING, S.STOPPING),
    ("recover", S.INTERRUPTED, S.PROVISIONING),
    ("recover", S.UNHEALTHY, S.PROVISIONING),
    ("retry", S.FAILED, S.PENDING),
}
ALLOWED_SOURCES = {(name, source) for name, source, _ in ALLOWED}
REFUSED = sorted(
    (name, source) for name, source in product(TRANSITIONS, S.values) if (name, source) not in ALLOWED_SOURCES
)


@pytest.mark.parametrize(("transition", "source", "target"), sorted(ALLOWED))
def test_allowed_transition_moves_the_workload_and_records_it(
    db, django_capture_on_commit_callbacks, transition, source, target
):
    workload = WorkloadFactory(status=source)

    with django_capture_on_commit_callbacks(execute=True):
        workload_transition(workload_id=workload.id, transition=transition, message="because")

    workload.refresh_from_db()
    assert workload.status == target
    event = WorkloadEvent.objects.get(workload=workload, kind=WorkloadEvent.Kind.TRANSITION)
    assert (event.name, event.from_status, event.to_status, event.message) == (transition, source, target, "because")
    assert routing.kv_get_status(workload_id=workload.id) == target


@pytest.mark.parametrize(("transition", "source"), REFUSED)
def test_every_other_move_is_refused_and_changes_nothing(db, transition, source):
    workload = WorkloadFactory(status=source)

    with pytest.raises(TransitionRefused) as refused:
        workload_transition(workload_id=workload.id, transition=transition)

    assert refused.value.current_state == source
    assert refused.value.status == 409
    workload.refresh_from_db()
    assert workload.status == source
    assert not WorkloadEvent.objects.filter(workload=workload).exists()
    assert routing.kv_get_status(workload_id=workload.id) is None


def test_the_moves_any_transition_allows_are_exactly_the_design_table(db):
    """No from→to pair outside the table is reachable by any transition."""
    reachable = set()
    for name, source in product(TRANSITIONS, S.values):
        workload = WorkloadFactory(status=source)
        try:
            workload_transition(workload_id=workload.id, transition=name)
        except TransitionRefused:
            continue
        workload.refresh_from_db()
        reachable.add((source, workload.status))
    assert reachable == {(source, target) for _, source, target in ALLOWED}


def test_status_cannot_be_assigned_directly(db):
    workload = WorkloadFactory(status=S.RUNNING)
    with pytest.raises(AttributeError):
        workload.status = S.TERMINATED


def test_a_stale_copy_cannot_overwrite_a_newer_state(db):
    workload = WorkloadFactory(status=S.RUNNING)
    stale = Workload.objects.get(id=workload.id)
    workload_transition(workload_id=workload.id, transition="spot_interrupt")

    stale.user_terminate()
    with pytest.raises(ConcurrentTransition), transaction.atomic():
        stale.save()
    workload.refresh_from_db()
    assert workload.status == S.INTERRUPTED


@pytest.mark.parametrize(
    ("source", "transition"),
    [(S.RUNNING, "user_terminate"), (S.PENDING, "cancel"), (S.PROVISIONING, "cancel")],
)
def test_terminate_picks_the_transition_for_the_state(db, source, transition):
    workload = WorkloadFactory(status=source)

    workload_terminate(workload_id=workload.id, reason="done with it")

    workload.refresh_from_db()
    assert workload.status == S.STOPPING
    assert workload.termination_reason == "done with it"
    assert workload.events.get().name == transition


@pytest.mark.parametrize("source", [S.STOPPING, S.TERMINATED, S.FAILED, S.INTERRUPTED, S.UNHEALTHY])
def test_terminate_is_refused_where_the_machine_has_no_such_edge(db, source):
    workload = WorkloadFactory(status=source)
    with pytest.raises(TransitionRefused):
        workload_terminate(workload_id=workload.id)
    workload.refresh_from_db()
    assert workload.status == source


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("attempt", range(5))
def test_two_concurrent_conflicting_transitions_apply_exactly_once(attempt):
    """User terminate and spot interrupt race from RUNNING in two threads: one wins, one is refused."""
    workload = WorkloadFactory(status=S.RUNNING)
    barrier = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def attempt_transition(name: str) -> None:
        try:
            barrier.wait(timeout=30)
            workload_transition(workload_id=workload.id, transition=name)
            outcomes[name] = "applied"
        except TransitionRefused:
            outcomes[name] = "refused"
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=attempt_transition, args=(name,)) for name in ("user_terminate", "spot_interrupt")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(outcomes.values()) == ["applied", "refused"], outcomes
    winner = next(name for name, outcome in outcomes.items() if outcome == "applied")
    workload.refresh_from_db()
    assert workload.status == {"user_terminate": S.STOPPING, "spot_interrupt": S.INTERRUPTED}[winner]
    transitions = WorkloadEvent.objects.filter(workload=workload, kind=WorkloadEvent.Kind.TRANSITION)
    assert [event.name for event in transitions] == [winner]


def test_the_suite_runs_on_the_database_the_environment_names(db):
    # CI runs the suite twice; this shows (and checks) which backend each run exercised.
    configured = str(settings.DATABASE_URL or "")
    expected = "postgresql" if configured.startswith(("postgres", "pgsql")) else "sqlite"
    print(f"database vendor: {connection.vendor}")
    assert connection.vendor == expected
