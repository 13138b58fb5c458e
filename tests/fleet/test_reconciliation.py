"""Reconciliation of the clouds' managed instances with the database, on the local cloud."""

import time
import uuid
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.utils import timezone

from fleet.reconciliation import cloud_reconcile
from placement.clouds import local
from placement.clouds.base import MANAGED_BY_TAG, MANAGED_BY_VALUE, InstanceRequest, InstanceState
from placement.models import ReconcileFinding
from tests.factories import WorkloadFactory, WorkloadInstanceFactory
from workloads.models import WorkflowKind, WorkflowRun, WorkloadStatus

pytestmark = pytest.mark.django_db

REGION = "us-east-1"
GRACE = 600


@pytest.fixture(autouse=True)
def grace(settings, local_cloud_clean):
    local.terminate_all()  # instances earlier tests left would be leaks here too
    settings.RECONCILE_GRACE_SECONDS = GRACE
    settings.CLOUD_REGIONS = {"aws": [REGION], "gcp": [], "azure": []}


def launch_outside_the_system(token: str, *, launched_seconds_ago: float, managed: bool = True) -> str:
    """An instance someone (or a crashed run) made with our tag; no workload row owns it."""
    tags = {MANAGED_BY_TAG: MANAGED_BY_VALUE} if managed else {}
    info = local.LocalCloud("aws").create_spot_instance(
        InstanceRequest(f"{token}-{uuid.uuid4().hex}", REGION, "us-east-1a", "m5.large", Decimal("1"), tags)
    )
    record = local._load(info.instance_id)
    local._save({**record, "launched_at": time.time() - launched_seconds_ago})
    return info.instance_id


def state(instance_id: str) -> InstanceState:
    return local.LocalCloud("aws").get_instance_status(instance_id, REGION).state


def test_a_leak_past_the_grace_period_is_terminated_and_one_inside_it_is_left_alone():
    old = launch_outside_the_system("leak-old", launched_seconds_ago=GRACE + 60)
    young = launch_outside_the_system("leak-young", launched_seconds_ago=30)
    unmanaged = launch_outside_the_system("not-ours", launched_seconds_ago=GRACE * 10, managed=False)

    report = cloud_reconcile()

    assert state(old) in (InstanceState.STOPPING, InstanceState.TERMINATED)
    assert state(young) in (InstanceState.PENDING, InstanceState.RUNNING)
    assert state(unmanaged) in (InstanceState.PENDING, InstanceState.RUNNING)
    assert {(a.action, a.instance_id) for a in report.actions} == {("terminate", old), ("wait", young)}
    findings = {f.instance_id: f for f in ReconcileFinding.objects.filter(kind=ReconcileFinding.Kind.LEAK)}
    assert findings[old].outcome == ReconcileFinding.Outcome.TERMINATED and findings[old].acted_at is not None
    assert findings[young].outcome == ReconcileFinding.Outcome.WAITING and findings[young].acted_at is None


def test_an_instance_a_workload_owns_is_never_a_leak():
    owned = launch_outside_the_system("owned", launched_seconds_ago=GRACE * 2)
    workload = WorkloadFactory(status=WorkloadStatus.RUNNING)
    WorkloadInstanceFactory(workload=workload, availability_zone="us-east-1a", instance_id=owned)

    report = cloud_reconcile()

    assert report.actions == []
    assert state(owned) in (InstanceState.PENDING, InstanceState.RUNNING)


def test_the_young_leak_is_terminated_by_a_later_pass_once_its_grace_is_over():
    young = launch_outside_the_system("leak-later", launched_seconds_ago=30)
    cloud_reconcile()
    assert state(young) in (InstanceState.PENDING, InstanceState.RUNNING)

    report = cloud_reconcile(now=timezone.now() + timezone.timedelta(seconds=GRACE))

    assert [(a.action, a.instance_id) for a in report.actions] == [("terminate", young)]
    assert ReconcileFinding.objects.get(instance_id=young).outcome == ReconcileFinding.Outcome.TERMINATED


def test_a_running_workload_whose_instance_is_gone_goes_to_interruption_handling(django_capture_on_commit_callbacks):
    workload = WorkloadFactory(status=WorkloadStatus.RUNNING, config={"health_check_port": 8080, "recovery": "migrate"})
    gone = f"i-{uuid.uuid4().hex[:17]}"
    WorkloadInstanceFactory(workload=workload, availability_zone="us-east-1a", instance_id=gone)

    with django_capture_on_commit_callbacks(execute=False):
        report = cloud_reconcile()

    workload.refresh_from_db()
    assert workload.status == WorkloadStatus.INTERRUPTED
    assert [(a.action, a.workload_id) for a in report.actions] == [("interrupt", str(workload.id))]
    assert WorkflowRun.objects.filter(workload=workload, kind=WorkflowKind.MIGRATE).exists()
    finding = ReconcileFinding.objects.get(instance_id=gone)
    assert (finding.kind, finding.outcome, finding.workload_id) == ("lost", "interrupted", workload.id)


def test_the_dry_run_command_prints_what_it_would_do_and_changes_nothing(capsys):
    old = launch_outside_the_system("dry-old", launched_seconds_ago=GRACE + 60)
    young = launch_outside_the_system("dry-young", launched_seconds_ago=10)

    call_command("reconcile", "--dry-run")

    out = capsys.readouterr().out
    assert f"would terminate aws/{REGION} {old}: no workload owns it" in out
    assert f"would wait aws/{REGION} {young}" in out
    assert "would terminate 1 leaked instance(s), leave 1 inside the grace period" in out
    assert state(old) in (InstanceState.PENDING, InstanceState.RUNNING)
    assert not ReconcileFinding.objects.exists()
