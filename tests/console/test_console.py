"""The operator console: dashboard figures, the workload page, the operator actions and the price chart."""

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from console import selectors
from console.admin import money
from placement.admin import price_chart_svg
from placement.models import Offer, PoolBlock
from placement.services import catalog_load_snapshot, pool_block
from storage.models import WorkloadStorageConfig, WorkloadStorageObject
from tests.factories import WorkloadFactory
from workloads.models import (
    Notification,
    NotificationType,
    RunStatus,
    StepStatus,
    WorkflowKind,
    WorkflowRun,
    WorkloadEvent,
    WorkloadInstance,
    WorkloadStatus,
)
from workloads.workflows.engine import workflow_run_create

S = WorkloadStatus
pytestmark = pytest.mark.django_db
NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)


@pytest.fixture
def operator(client, db):
    user = get_user_model().objects.create_superuser("operator", "op@example.com", "a-long-password-1")
    client.force_login(user)
    return client


def instance_for(workload, *, started, ended=None, spot="0.360000", on_demand="1.080000", **fields):
    """An instance segment with the times it ran (``created_at`` is auto_now_add, so set it after)."""
    instance = WorkloadInstance.objects.create(
        workload=workload,
        provider=fields.pop("provider", "aws"),
        region=fields.pop("region", "us-east-1"),
        availability_zone=fields.pop("availability_zone", "us-east-1a"),
        instance_type=fields.pop("instance_type", "m6i.large"),
        instance_id=fields.pop("instance_id", "i-console"),
        status="TERMINATED" if ended else "RUNNING",
        spot_price=Decimal(spot),
        on_demand_price=Decimal(on_demand),
        terminated_at=ended,
        **fields,
    )
    WorkloadInstance.objects.filter(pk=instance.pk).update(created_at=started)
    instance.refresh_from_db()
    return instance


def failed_run(workload, *, step="provision-cloud-resources", error="No capacity in any pool"):
    run = workflow_run_create(kind=WorkflowKind.PROVISION, workload=workload)
    run.steps.filter(position__lt=4).update(status=StepStatus.SUCCEEDED, attempts=1)
    run.steps.filter(name=step).update(status=StepStatus.FAILED, attempts=4, error=error)
    WorkflowRun.objects.filter(pk=run.pk).update(
        status=RunStatus.FAILED, failed_step=step, error=error, finished_at=timezone.now()
    )
    return run


# --- dashboard ---------------------------------------------------------------------


def test_state_counts_list_every_state_with_zeros():
    WorkloadFactory.create_batch(2, status=S.RUNNING)
    WorkloadFactory(status=S.FAILED)

    counts = {state.status: state.count for state in selectors.console_state_counts()}

    assert counts == {**dict.fromkeys(S.values, 0), S.RUNNING: 2, S.FAILED: 1}


def test_month_spend_sums_every_customer_and_running_instances_accrue_by_the_second():
    first, second = WorkloadFactory(status=S.TERMINATED), WorkloadFactory(status=S.RUNNING)
    # One hour at 0.36/h (on demand 1.08): 0.36 spent, 0.72 saved.
    instance_for(first, started=NOW - timedelta(hours=3), ended=NOW - timedelta(hours=2))
    # Running for 30 min 1 s at 0.72/h up to NOW: 1801 s x 0.72 / 3600 = 0.360200.
    instance_for(second, started=NOW - timedelta(minutes=30, seconds=1), spot="0.720000", on_demand="2.160000")
    # Last month's segment does not count.
    instance_for(first, started=NOW - timedelta(days=40), ended=NOW - timedelta(days=39))

    month = selectors.console_month_spend(now=NOW)

    assert month.label == "March 2026"
    assert month.customers == 2
    assert month.spend == Decimal("0.720200")
    assert month.on_demand_equivalent == Decimal("2.160600")
    assert month.saving == Decimal("1.440400")
    assert month.saving_percent == Decimal("66.67")


def test_segment_cost_is_seconds_times_price_for_a_running_instance():
    workload = WorkloadFactory(status=S.RUNNING)
    instance = instance_for(workload, started=NOW - timedelta(seconds=10), spot="0.036000")

    segment = selectors.segment_cost(instance=instance, now=NOW)

    assert segment.running
    assert segment.seconds == Decimal(10)
    assert segment.cost == Decimal("0.000100")  # 10 x 0.036 / 3600


def test_dashboard_shows_states_spend_interruptions_migrations_failures_and_blocks(operator):
    WorkloadFactory(status=S.RUNNING, name="steady-web")
    interrupted = WorkloadFactory(status=S.INTERRUPTED, name="preempted-trainer")
    migrating = WorkloadFactory(status=S.PROVISIONING, name="moving-batch")
    migration = workflow_run_create(kind=WorkflowKind.MIGRATE, workload=migrating)
    migration.steps.filter(position__lte=3).update(status=StepStatus.SUCCEEDED, attempts=1)
    broken = WorkloadFactory(status=S.FAILED, name="broken-render")
    failed_run(broken, error="Capacity exhausted in every pool tried")
    pool_block(
        provider="gcp", region="us-central1", availability_zone="us-central1-a", instance_type="n2-standard-4",
        reason="spot interruption of gce-123", seconds=600,
    )  # fmt: skip
    PoolBlock.objects.create(
        provider="aws", region="us-east-1", availability_zone="us-east-1b", instance_type="c7i.large",
        until=timezone.now() - timedelta(minutes=1), reason="long expired",
    )  # fmt: skip
    now = timezone.now()
    instance_for(interrupted, started=max(now - timedelta(minutes=2), now.replace(day=1, hour=0, minute=0)))

    index = operator.get(reverse("admin:index"))
    assert reverse("admin:workloads_console") in index.content.decode()

    page = operator.get(reverse("admin:workloads_console"))

    assert page.status_code == 200
    dashboard = page.context["dashboard"]
    counts = {state.status: state.count for state in dashboard.states}
    assert counts[S.RUNNING] == counts[S.INTERRUPTED] == counts[S.PROVISIONING] == counts[S.FAILED] == 1
    assert dashboard.total == 4
    assert [workload.name for workload in dashboard.interrupted] == ["preempted-trainer"]
    assert [(run.workload.name, run.current_step.name) for run in dashboard.migrations] == [
        ("moving-batch", "find-placement")
    ]
    assert [(run.workload.name, run.failed_step) for run in dashboard.failures] == [
        ("broken-render", "provision-cloud-resources")
    ]
    assert [str(block) for block in dashboard.blocked_pools] == ["gcp/us-central1/us-central1-a/n2-standard-4"]
    assert dashboard.month.spend > 0

    html = page.content.decode()
    assert 'class="state-badge"' in html and "#15803d" in html  # the RUNNING badge's colour
    assert "?status__exact=INTERRUPTED" in html
    for text in ("preempted-trainer", "moving-batch", "find-placement", "broken-render",
                 "provision-cloud-resources", "Capacity exhausted in every pool tried",
                 "gcp/us-central1/us-central1-a/n2-standard-4", "spot interruption of gce-123"):  # fmt: skip
        assert text in html, text
    assert "long expired" not in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing fetched from elsewhere


def test_money_shows_cents_from_a_dollar_and_six_places_below():
    assert money(Decimal("1234.5")) == "$1,234.50"
    assert money(Decimal("0.36")) == "$0.360000"
    assert money(Decimal("0.0000204")) == "$0.000020"


def test_dashboard_needs_a_staff_login(client):
    page = client.get(reverse("admin:workloads_console"))
    assert page.status_code == 302 and "/admin/login/" in page["Location"]


# --- the workload page ------------------------------------------------------------------


def test_workload_page_shows_runs_segments_notifications_and_storage(operator):
    workload = WorkloadFactory(status=S.RUNNING, name="trainer")
    run = workflow_run_create(kind=WorkflowKind.PROVISION, workload=workload)
    run.steps.filter(name="validate-quotas").update(
        status=StepStatus.SUCCEEDED,
        attempts=1,
        started_at=NOW,
        finished_at=NOW + timedelta(seconds=1.5),
    )
    run.steps.filter(name="provision-cloud-resources").update(
        status=StepStatus.RUNNING, attempts=2, started_at=NOW, error="TransientCloudError: throttled"
    )
    now = timezone.now()
    instance_for(workload, started=now - timedelta(hours=2), ended=now - timedelta(hours=1), instance_id="i-old")
    instance_for(workload, started=now - timedelta(minutes=5), instance_id="i-new", spot="0.100000")
    Notification.objects.create(
        customer=workload.customer, workload=workload, type=NotificationType.WORKLOAD_READY, payload={}
    )
    WorkloadStorageConfig.objects.create(workload=workload, storage_quota_bytes=10 * 1024**3, retention_days=7)
    WorkloadStorageObject.objects.create(workload=workload, object_key="state/progress.json", size_bytes=2048)

    page = operator.get(reverse("admin:workloads_workload_change", args=[workload.id]))

    assert page.status_code == 200
    html = page.content.decode()
    for text in ("validate-quotas", "1.50 s", "provision-cloud-resources", "TransientCloudError: throttled",
                 "i-old", "i-new", "0.360000", "WORKLOAD_READY", "2.0\xa0KB", "7 days"):  # fmt: skip
        assert text in html, text
    console = page.context["console"]
    running = [segment for segment in console.segments if segment.running]
    assert len(running) == 1 and Decimal("0.0083") <= running[0].cost <= Decimal("0.0090")  # ~5 min at 0.10/h
    assert console.total_cost == sum(segment.cost for segment in console.segments)
    # The buttons offered while RUNNING.
    assert [action["name"] for action in page.context["operator_actions"]] == ["terminate", "migrate", "interrupt"]
    assert html.count('class="state-badge"') >= 1


def test_the_list_shows_state_badges_and_filters_by_state(operator):
    WorkloadFactory(status=S.FAILED, name="failed-one")
    WorkloadFactory(status=S.RUNNING, name="running-one")

    page = operator.get(reverse("admin:workloads_workload_changelist"), {"status__exact": "FAILED"})

    html = page.content.decode()
    assert "failed-one" in html and "running-one" not in html
    assert "#b91c1c" in html  # the FAILED badge


# --- operator actions ------------------------------------------------------------------


def act(operator, workload, action):
    return operator.post(reverse("admin:workloads_workload_action", args=[workload.id, action]), follow=True)


def messages_of(response) -> list[tuple[str, str]]:
    return [(message.level_tag, message.message) for message in response.context["messages"]]


def test_retry_starts_a_new_provisioning_run_from_failed(operator, django_capture_on_commit_callbacks):
    workload = WorkloadFactory(status=S.FAILED, failure_reason="Quota exceeded")
    old = failed_run(workload)

    response = act(operator, workload, "retry")

    assert response.status_code == 200
    workload.refresh_from_db()
    assert workload.status == S.PENDING and workload.failure_reason == ""
    runs = WorkflowRun.objects.filter(workload=workload, kind=WorkflowKind.PROVISION)
    assert runs.count() == 2
    new = runs.exclude(pk=old.pk).get()
    assert new.status == RunStatus.RUNNING and new.steps.count() == 10
    assert WorkflowRun.objects.get(pk=old.pk).status == RunStatus.FAILED  # the record stays
    event = WorkloadEvent.objects.filter(workload=workload, name="retry").get()
    assert (event.from_status, event.to_status, event.detail["previous_failure"]) == (
        S.FAILED,
        S.PENDING,
        "Quota exceeded",
    )
    assert messages_of(response)[0][0] == "success"


def test_retry_is_refused_unless_failed(operator):
    workload = WorkloadFactory(status=S.RUNNING)

    response = act(operator, workload, "retry")

    assert response.status_code == 200
    assert messages_of(response) == [("error", f"{workload.name}: Workload {workload.id} cannot retry while RUNNING.")]
    assert not WorkflowRun.objects.filter(workload=workload).exists()


def test_migrate_now_starts_a_migration_away_from_the_pool_without_blocking_it(operator):
    catalog_load_snapshot()
    workload = WorkloadFactory(status=S.RUNNING)
    instance = instance_for(workload, started=timezone.now() - timedelta(minutes=3))

    response = act(operator, workload, "migrate")

    workload.refresh_from_db()
    assert workload.status == S.INTERRUPTED
    run = WorkflowRun.objects.get(workload=workload, kind=WorkflowKind.MIGRATE)
    assert run.status == RunStatus.RUNNING
    assert run.payload["exclude_pools"] == [["aws", "us-east-1", "us-east-1a", "m6i.large"]]
    assert run.payload["from_instance"] == str(instance.id)
    assert not PoolBlock.objects.exists()
    assert messages_of(response)[0][0] == "success"


def test_migrate_now_with_nowhere_to_go_leaves_the_workload_running(operator):
    workload = WorkloadFactory(status=S.RUNNING)  # no catalog loaded: no other offer
    instance_for(workload, started=timezone.now() - timedelta(minutes=3))

    response = act(operator, workload, "migrate")

    workload.refresh_from_db()
    assert workload.status == S.RUNNING
    assert not WorkflowRun.objects.filter(workload=workload).exists()
    [(level, message)] = messages_of(response)
    assert level == "error" and "No other offer fits this workload" in message


def test_simulate_interruption_is_refused_on_a_real_cloud_with_the_services_message(operator, settings):
    settings.CLOUD_BACKENDS = {"aws": "aws", "gcp": "local", "azure": "local"}
    workload = WorkloadFactory(status=S.RUNNING, name="on-real-aws")
    instance_for(workload, started=timezone.now() - timedelta(minutes=1))

    response = act(operator, workload, "interrupt")

    assert response.status_code == 200
    assert messages_of(response) == [
        (
            "error",
            "on-real-aws: Only local-cloud instances can be interrupted on demand; this one runs on aws.",
        )
    ]
    workload.refresh_from_db()
    assert workload.status == S.RUNNING


def test_simulate_interruption_of_an_unknown_local_instance_is_a_message_not_a_500(operator):
    workload = WorkloadFactory(status=S.RUNNING, name="ghost")
    instance_for(workload, started=timezone.now(), instance_id="local-does-not-exist")

    response = act(operator, workload, "interrupt")

    assert response.status_code == 200
    [(level, message)] = messages_of(response)
    assert level == "error" and message.startswith("ghost: ")


def test_terminate_button_stops_the_workload_and_starts_termination(operator):
    workload = WorkloadFactory(status=S.RUNNING)

    response = act(operator, workload, "terminate")

    workload.refresh_from_db()
    assert workload.status == S.STOPPING
    assert WorkflowRun.objects.filter(workload=workload, kind=WorkflowKind.TERMINATE).exists()
    assert response.redirect_chain[-1][0] == reverse("admin:workloads_workload_change", args=[workload.id])


def test_the_bulk_actions_call_the_same_services(operator):
    failed = WorkloadFactory(status=S.FAILED)
    running = WorkloadFactory(status=S.RUNNING)

    response = operator.post(
        reverse("admin:workloads_workload_changelist"),
        {"action": "retry_provisioning", "_selected_action": [str(failed.id), str(running.id)]},
        follow=True,
    )

    failed.refresh_from_db()
    running.refresh_from_db()
    assert (failed.status, running.status) == (S.PENDING, S.RUNNING)
    assert sorted(level for level, _ in messages_of(response)) == ["error", "success"]


def test_actions_need_post_and_a_known_action(operator):
    workload = WorkloadFactory(status=S.RUNNING)
    url = reverse("admin:workloads_workload_action", args=[workload.id, "terminate"])

    assert operator.get(url).status_code == 405
    assert operator.post(reverse("admin:workloads_workload_action", args=[workload.id, "explode"])).status_code == 404
    workload.refresh_from_db()
    assert workload.status == S.RUNNING


def test_actions_need_a_staff_login(client):
    workload = WorkloadFactory(status=S.RUNNING)
    client.post(reverse("admin:workloads_workload_action", args=[workload.id, "terminate"]))
    workload.refresh_from_db()
    assert workload.status == S.RUNNING


# --- the pool's price chart ----------------------------------------------------------------


def test_price_chart_is_a_step_line_through_every_observation():
    points = [
        (NOW - timedelta(hours=2), Decimal("0.040000")),
        (NOW - timedelta(hours=1), Decimal("0.030000")),
        (NOW - timedelta(hours=3), Decimal("0.050000")),
    ]

    svg = str(price_chart_svg(points, now=NOW))

    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count("<circle") == 3
    assert 'class="price-line"' in svg and "H" in svg.split('d="')[1]
    assert "0.030000 to 0.050000 USD/h" in svg
    assert "2026-03-15 10:00 UTC: 0.040000" in svg
    assert "http" not in svg.replace("http://www.w3.org/2000/svg", "")


def test_price_chart_without_history_says_so():
    assert "No price history yet" in price_chart_svg([])


def test_a_pool_page_shows_its_price_chart(operator):
    catalog_load_snapshot()
    offer = Offer.objects.get(instance_type__name="m6i.large", availability_zone="us-east-1a")

    html = operator.get(reverse("admin:placement_offer_change", args=[offer.id])).content.decode()

    assert '<svg xmlns="http://www.w3.org/2000/svg" class="price-chart"' in html
    assert "Spot price history" in html and 'class="price-line"' in html
