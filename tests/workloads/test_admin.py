"""The operator console: every model is there, with its filters and the timeline inline."""

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from tests.factories import WorkloadFactory
from workloads.admin import RECENT_LOG_LINES
from workloads.models import WorkloadStatus
from workloads.services import workload_log_mark, workload_transition


@pytest.fixture
def operator(client, db):
    user = get_user_model().objects.create_superuser("operator", "op@example.com", "a-long-password-1")
    client.force_login(user)
    return client


def test_admin_login_page_answers(client, db):
    assert client.get("/admin/login/").status_code == 200


@pytest.mark.parametrize(
    "changelist",
    [
        "accounts_customer",
        "accounts_apikey",
        "workloads_workload",
        "workloads_workloadinstance",
        "workloads_workloadrouting",
        "workloads_workloadevent",
        "django_celery_beat_periodictask",
        "django_celery_beat_intervalschedule",
        "django_celery_beat_crontabschedule",
    ],
)
def test_every_model_has_a_changelist(operator, changelist):
    assert operator.get(reverse(f"admin:{changelist}_changelist")).status_code == 200


def test_workload_page_shows_its_timeline_and_filters_work(operator):
    workload = WorkloadFactory(status=WorkloadStatus.RUNNING, name="render-farm")
    workload_transition(workload_id=workload.id, transition="spot_interrupt", message="notice received")

    page = operator.get(reverse("admin:workloads_workload_change", args=[workload.id]))
    assert page.status_code == 200
    assert b"notice received" in page.content

    filtered = operator.get(reverse("admin:workloads_workload_changelist"), {"status": "INTERRUPTED"})
    assert b"render-farm" in filtered.content
    searched = operator.get(reverse("admin:workloads_workload_changelist"), {"q": str(workload.id)})
    assert b"render-farm" in searched.content


def test_operator_can_terminate_a_workload_from_the_list(operator):
    workload = WorkloadFactory(status=WorkloadStatus.RUNNING)
    operator.post(
        reverse("admin:workloads_workload_changelist"),
        {"action": "terminate", "_selected_action": [str(workload.id)]},
    )
    workload.refresh_from_db()
    assert workload.status == WorkloadStatus.STOPPING


def test_old_customer_admin_links_redirect_to_the_accounts_app(operator):
    answer = operator.get("/admin/workloads/customer/?q=acme")
    assert answer.status_code == 301
    assert answer["Location"] == "/admin/accounts/customer/?q=acme"
    assert operator.get(answer["Location"]).status_code == 200


def test_workload_page_shows_its_newest_log_lines(operator):
    workload = WorkloadFactory(status=WorkloadStatus.RUNNING)
    for n in range(RECENT_LOG_LINES + 5):
        workload_log_mark(workload_id=workload.id, text=f"step <{n}> done", instance_id="local-abc")

    page = operator.get(reverse("admin:workloads_workload_change", args=[workload.id]))
    assert page.status_code == 200
    assert f"step &lt;{RECENT_LOG_LINES + 4}&gt; done".encode() in page.content  # escaped
    assert b"step &lt;5&gt; done" in page.content and b"step &lt;4&gt; done" not in page.content
