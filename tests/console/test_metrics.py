"""GET /metrics: who may read it, and every family's values for rows made here."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from billing.models import UsageRecord
from console import metrics
from tests.factories import WorkloadFactory
from tests.live import wait_until
from workloads.health import CheckResult
from workloads.models import (
    HealthMonitor,
    RunStatus,
    StepStatus,
    WorkflowRun,
    WorkflowStep,
    WorkloadEvent,
    WorkloadInstance,
    WorkloadStatus,
)

S = WorkloadStatus
FAMILIES = {
    "arbitrage_workloads": "gauge",
    "arbitrage_workflow_step_duration_seconds": "histogram",
    "arbitrage_workflow_step_failures": "counter",
    "arbitrage_time_to_running_seconds": "histogram",
    "arbitrage_interruptions": "counter",
    "arbitrage_migrations": "counter",
    "arbitrage_health_checks": "counter",
    "arbitrage_health_check_failures": "counter",
    "arbitrage_gateway_requests": "counter",
    "arbitrage_gateway_upstream_latency_seconds": "histogram",
    "arbitrage_gateway_upstream_errors": "counter",
    "arbitrage_month_spend_usd": "gauge",
    "arbitrage_month_on_demand_equivalent_usd": "gauge",
    "arbitrage_month_saving_usd": "gauge",
    "arbitrage_metrics_source_up": "gauge",
    "arbitrage_pool_expected_lifetime_seconds": "gauge",
    "arbitrage_pool_refusal_rate": "gauge",
    "arbitrage_pool_preemptions": "counter",
}


@pytest.fixture
def metrics_settings(settings):
    settings.METRICS_PUBLIC = False
    settings.METRICS_TOKEN = ""
    return settings


def scrape(client: Client | None = None, **headers) -> dict[str, dict[tuple, float]]:
    """``{sample name: {sorted label items: value}}`` of a successful scrape."""
    response = (client or Client()).get("/metrics", headers=headers)
    assert response.status_code == 200, response.content
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples[name][tuple(sorted(labels.items()))]


# --- access ------------------------------------------------------------------------------


def test_anonymous_gets_401_in_plain_text(db, metrics_settings):
    response = Client().get("/metrics")
    assert response.status_code == 401
    assert response["Content-Type"].startswith("text/plain")
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_signed_in_user_who_is_not_staff_gets_403(db, metrics_settings, django_user_model):
    client = Client()
    client.force_login(django_user_model.objects.create_user("someone", password="x" * 12))
    response = client.get("/metrics")
    assert response.status_code == 403
    assert response["Content-Type"].startswith("text/plain")


def test_staff_get_the_text_format(db, metrics_settings, django_user_model):
    client = Client()
    client.force_login(django_user_model.objects.create_user("operator", password="x" * 12, is_staff=True))
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    types = {family.name: family.type for family in text_string_to_metric_families(response.content.decode())}
    assert {name: types.get(name) for name in FAMILIES} == FAMILIES


def test_the_bearer_token_opens_it_and_a_wrong_one_is_refused(db, metrics_settings):
    metrics_settings.METRICS_TOKEN = "s3cret-scraper-token"
    assert Client().get("/metrics", headers={"Authorization": "Bearer s3cret-scraper-token"}).status_code == 200
    assert Client().get("/metrics", headers={"Authorization": "Bearer s3cret-scraper-tokeN"}).status_code == 401
    assert Client().get("/metrics", headers={"Authorization": "Basic s3cret-scraper-token"}).status_code == 401


def test_no_token_is_accepted_when_none_is_set(db, metrics_settings):
    assert Client().get("/metrics", headers={"Authorization": "Bearer "}).status_code == 401
    assert Client().get("/metrics", headers={"Authorization": "Bearer anything"}).status_code == 401


def test_metrics_public_opens_it_to_anyone(db, metrics_settings):
    metrics_settings.METRICS_PUBLIC = True
    assert Client().get("/metrics").status_code == 200
    assert Client().post("/metrics").status_code == 405


# --- values ----------------------------------------------------------------------------------


def at(run_or_step, **times) -> None:
    type(run_or_step).objects.filter(pk=run_or_step.pk).update(**times)


def make_run(workload, kind: str, status: str = RunStatus.SUCCEEDED, created_at: datetime | None = None):
    run = WorkflowRun.objects.create(kind=kind, workload=workload, status=status)
    if created_at is not None:
        at(run, created_at=created_at)
    return run


def make_step(run, name: str, status: str, started_at: datetime, seconds: float, position: int = 1):
    return WorkflowStep.objects.create(
        run=run,
        name=name,
        position=position,
        status=status,
        started_at=started_at,
        finished_at=started_at + timedelta(seconds=seconds),
    )


def test_workloads_steps_time_to_running_interruptions_and_migrations(db, metrics_settings):
    metrics_settings.METRICS_PUBLIC = True
    running = [WorkloadFactory(status=S.RUNNING) for _ in range(2)]
    WorkloadFactory(status=S.FAILED)
    t0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    provision = make_run(running[0], "provision", created_at=t0)
    make_step(provision, "validate-quotas", StepStatus.SUCCEEDED, t0, 3, position=1)
    make_step(provision, "register-routing", StepStatus.SUCCEEDED, t0 + timedelta(seconds=40), 5, position=7)
    failed = make_run(running[1], "provision", status=RunStatus.FAILED)
    make_step(failed, "provision-cloud-resources", StepStatus.FAILED, t0, 20, position=4)
    make_step(failed, "wait-for-instance", StepStatus.PENDING, t0, 0, position=5)
    migrate = make_run(running[1], "migrate", created_at=t0)
    make_step(migrate, "register-routing", StepStatus.SUCCEEDED, t0 + timedelta(seconds=100), 20, position=9)
    make_run(running[1], "migrate", status=RunStatus.FAILED)
    make_run(running[1], "migrate", status=RunStatus.RUNNING)
    for signal in ("agent", "cloud", "cloud"):
        WorkloadEvent.objects.create(
            workload=running[1],
            kind=WorkloadEvent.Kind.TRANSITION,
            name="spot_interrupt",
            from_status=S.RUNNING,
            to_status=S.INTERRUPTED,
            detail={"signal": signal},
        )

    samples = scrape()

    assert value(samples, "arbitrage_workloads", state="RUNNING") == 2
    assert value(samples, "arbitrage_workloads", state="FAILED") == 1
    assert value(samples, "arbitrage_workloads", state="UNHEALTHY") == 0
    assert set(samples["arbitrage_workloads"]) == {(("state", state),) for state in S.values}

    step = {"kind": "provision", "step": "validate-quotas"}
    assert value(samples, "arbitrage_workflow_step_duration_seconds_count", **step) == 1
    assert value(samples, "arbitrage_workflow_step_duration_seconds_sum", **step) == 3.0
    assert value(samples, "arbitrage_workflow_step_duration_seconds_bucket", le="2.5", **step) == 0
    assert value(samples, "arbitrage_workflow_step_duration_seconds_bucket", le="5.0", **step) == 1
    assert value(samples, "arbitrage_workflow_step_duration_seconds_bucket", le="+Inf", **step) == 1
    failing = {"kind": "provision", "step": "provision-cloud-resources"}
    assert value(samples, "arbitrage_workflow_step_failures_total", **failing) == 1
    assert value(samples, "arbitrage_workflow_step_duration_seconds_count", **failing) == 0  # only successes
    assert value(samples, "arbitrage_workflow_step_failures_total", kind="provision", step="validate-quotas") == 0
    assert value(samples, "arbitrage_workflow_step_failures_total", kind="terminate", step="record-billing") == 0

    assert value(samples, "arbitrage_time_to_running_seconds_count", kind="provision") == 1
    assert value(samples, "arbitrage_time_to_running_seconds_sum", kind="provision") == 45.0
    assert value(samples, "arbitrage_time_to_running_seconds_bucket", kind="provision", le="30.0") == 0
    assert value(samples, "arbitrage_time_to_running_seconds_bucket", kind="provision", le="60.0") == 1
    assert value(samples, "arbitrage_time_to_running_seconds_sum", kind="migrate") == 120.0
    assert value(samples, "arbitrage_time_to_running_seconds_bucket", kind="migrate", le="90.0") == 0
    assert value(samples, "arbitrage_time_to_running_seconds_bucket", kind="migrate", le="120.0") == 1

    assert value(samples, "arbitrage_interruptions_total", signal="agent") == 1
    assert value(samples, "arbitrage_interruptions_total", signal="cloud") == 2
    assert value(samples, "arbitrage_interruptions_total", signal="rebalance") == 0
    assert value(samples, "arbitrage_migrations_total", outcome="succeeded") == 1
    assert value(samples, "arbitrage_migrations_total", outcome="failed") == 1
    assert value(samples, "arbitrage_migrations_total", outcome="cancelled") == 0
    assert all(v == 1 for v in samples["arbitrage_metrics_source_up"].values())


def test_health_check_failures_are_counted_by_the_sweep(db, metrics_settings, settings, monkeypatch):
    from workloads import recovery

    metrics_settings.METRICS_PUBLIC = True
    settings.HEALTH_FAILURE_THRESHOLD = 3
    answers = {"10.0.0.1:8080": False, "10.0.0.2:8080": True, "10.0.0.3:8080": True}
    for endpoint, provider in zip(answers, ("aws", "aws", "gcp"), strict=True):
        HealthMonitor.objects.create(
            workload=WorkloadFactory(status=S.RUNNING),
            instance_id=f"i-{endpoint}",
            provider=provider,
            region="r",
            endpoint=endpoint,
        )
    monkeypatch.setattr(
        recovery,
        "check_many",
        lambda endpoints, **kw: [
            CheckResult(ok=answers[e], latency_ms=5, error="" if answers[e] else "HTTP 500") for e in endpoints
        ],
    )
    monkeypatch.setattr(recovery, "_instance_gone", lambda monitor: False)

    recovery.health_sweep_run()
    recovery.health_sweep_run()
    samples = scrape()

    assert value(samples, "arbitrage_health_checks_total", provider="aws") == 4
    assert value(samples, "arbitrage_health_checks_total", provider="gcp") == 2
    assert value(samples, "arbitrage_health_check_failures_total", provider="aws") == 2
    assert value(samples, "arbitrage_health_check_failures_total", provider="gcp") == 0
    assert value(samples, "arbitrage_health_check_failures_total", provider="azure") == 0


NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)


def segment(workload, provider, start, end, spot, on_demand, *, bill=None):
    """An instance segment from ``start`` to ``end`` (None: running), billed with ``bill`` = (cost, on-demand cost)."""
    instance = WorkloadInstance.objects.create(
        workload=workload,
        provider=provider,
        region="r1",
        instance_type="t1",
        instance_id=f"i-{provider}-{start:%d%H}",
        status="RUNNING" if end is None else "TERMINATED",
        spot_price=Decimal(spot),
        on_demand_price=None if on_demand is None else Decimal(on_demand),
    )
    WorkloadInstance.objects.filter(pk=instance.pk).update(created_at=start, terminated_at=end)
    if bill is not None:
        seconds = Decimal((end - start).total_seconds())
        UsageRecord.objects.create(
            instance=instance,
            customer=workload.customer,
            workload=workload,
            provider=provider,
            region="r1",
            instance_type="t1",
            started_at=start,
            ended_at=end,
            duration_seconds=seconds,
            duration_hours=seconds / 3600,
            spot_price_per_hour=Decimal(spot),
            on_demand_price_per_hour=None if on_demand is None else Decimal(on_demand),
            total_cost=Decimal(bill[0]),
            on_demand_cost=None if bill[1] is None else Decimal(bill[1]),
        )
    return instance


def test_spend_on_demand_and_saving_this_month_by_provider(db, metrics_settings, monkeypatch):
    metrics_settings.METRICS_PUBLIC = True
    monkeypatch.setattr(metrics, "clock", lambda: NOW)
    workload = WorkloadFactory(status=S.RUNNING)
    day = timedelta(days=1)
    hour = timedelta(hours=1)
    march = datetime(2026, 3, 1, tzinfo=UTC)
    # Billed inside March: counted as billed.
    segment(workload, "aws", march + day, march + day + 2 * hour, "0.75", "2", bill=("1.500000", "4.000000"))
    segment(workload, "gcp", march + 2 * day, march + 2 * day + hour, "0.25", None, bill=("0.250000", None))
    # Billed, but began in February: only its 2 hours in March count (0.5/h, on demand 2/h).
    segment(workload, "aws", march - 2 * hour, march + 2 * hour, "0.5", "2", bill=("2.000000", "8.000000"))
    # February only: not this month.
    segment(workload, "azure", march - 3 * day, march - 2 * day, "1", "3", bill=("24.000000", "72.000000"))
    # Running for 3 hours at 0.1/h (on demand 0.4/h).
    segment(workload, "azure", NOW - 3 * hour, None, "0.1", "0.4")
    # Ended 1 hour ago, not billed yet: 1 hour at 0.2/h (on demand 0.3/h).
    segment(workload, "gcp", NOW - 2 * hour, NOW - hour, "0.2", "0.3")

    samples = scrape()

    expected = {  # provider: (spend, on-demand equivalent)
        "aws": (Decimal("2.5"), Decimal("8")),
        "gcp": (Decimal("0.45"), Decimal("0.55")),
        "azure": (Decimal("0.3"), Decimal("1.2")),
    }
    for provider, (spend, on_demand) in expected.items():
        assert value(samples, "arbitrage_month_spend_usd", provider=provider) == float(spend)
        assert value(samples, "arbitrage_month_on_demand_equivalent_usd", provider=provider) == float(on_demand)
        assert value(samples, "arbitrage_month_saving_usd", provider=provider) == float(on_demand - spend)

    # The same figures as the customer's monthly summary (billing.selectors).
    from billing.selectors import customer_monthly_summary

    summary = customer_monthly_summary(customer_id=workload.customer_id, month=NOW.date(), now=NOW)
    totals = metrics.month_spend_by_provider(NOW)
    assert {row.provider: (row.spend, row.on_demand_equivalent) for row in summary.providers} == totals


# --- the gateway, a process of its own ----------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_gateway_requests_are_counted_by_status_and_appear_on_metrics(metrics_settings):
    from tests.gateway.helpers import EchoUpstream, Gateway, routed_workload

    metrics_settings.METRICS_PUBLIC = True
    upstream = EchoUpstream()
    gateway = Gateway()
    try:
        workload = routed_workload(upstream.endpoint)
        assert gateway.get(workload, "/hello").status_code == 200
        assert gateway.get(workload, "/again").status_code == 200
        assert gateway.client.get("/w/00000000-0000-0000-0000-000000000000/").status_code == 404

        def published():
            samples = scrape()
            requests = samples.get("arbitrage_gateway_requests_total", {})
            ok = requests.get((("class", "2xx"), ("code", "200")), 0)
            missing = requests.get((("class", "4xx"), ("code", "404")), 0)
            return samples if ok >= 2 and missing >= 1 else None

        samples = wait_until(published, timeout=15, what="the gateway's counters on /metrics")
    finally:
        gateway.stop()
        upstream.close()

    assert value(samples, "arbitrage_gateway_upstream_latency_seconds_count") == 2
    assert value(samples, "arbitrage_gateway_upstream_latency_seconds_bucket", le="+Inf") == 2
    assert value(samples, "arbitrage_gateway_upstream_latency_seconds_bucket", le="60.0") == 2
    assert value(samples, "arbitrage_gateway_upstream_latency_seconds_sum") > 0


def test_a_source_that_fails_is_reported_down_and_the_rest_still_answer(db, metrics_settings, monkeypatch):
    metrics_settings.METRICS_PUBLIC = True

    def broken():
        raise ConnectionError("KV down")

    monkeypatch.setitem(metrics.SOURCES, "gateway", broken)
    samples = scrape()
    assert value(samples, "arbitrage_metrics_source_up", source="gateway") == 0
    assert value(samples, "arbitrage_metrics_source_up", source="workloads") == 1
    assert "arbitrage_gateway_requests_total" not in samples


def test_each_pool_the_fleet_has_seen_has_its_estimates_on_metrics(db, metrics_settings):
    from placement.services import pool_launch_record, pool_lifetime_record

    pool = ("aws", "us-east-1", "us-east-1a", "p3.2xlarge")
    pool_lifetime_record(pool=pool, market="spot", seconds=1800, preempted=True)
    pool_launch_record(pool=pool, market="spot", refused=True)
    metrics_settings.METRICS_PUBLIC = True
    samples = scrape()
    labels = {"provider": "aws", "region": "us-east-1", "zone": "us-east-1a", "instance_type": "p3.2xlarge"}
    assert value(samples, "arbitrage_pool_preemptions_total", **labels) == 1
    assert 0 < value(samples, "arbitrage_pool_expected_lifetime_seconds", **labels) < 30 * 86_400
    assert 0.1 < value(samples, "arbitrage_pool_refusal_rate", **labels) < 1
