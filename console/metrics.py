"""``GET /metrics``: Prometheus text exposition (format 0.0.4) of the whole service.

The web process serves it, but most of what it reports happens in other
processes: Celery workers run the workflows and the health sweep, the gateway
(its own uvicorn process, its own container in docker-compose) proxies the
requests, and gunicorn runs several web workers. So nothing here is an
in-process ``Counter`` of one process; every family is read at scrape time from
a store all processes share:

* **the database**, for everything it already records. Counters and histograms
  are cumulative aggregates over all rows (each one ``GROUP BY`` query with
  conditional counts per bucket, no rows fetched), so they only grow, as Prometheus
  counters must; a sliding window ("the last 24 h") would shrink and read as
  resets. Gauges (workloads by state, this month's spend) are the current figures.
* **the routing KV** (Redis in services mode, the file cache embedded), for what
  the database does not keep: the gateway's request counts and upstream latency
  (each gateway process publishes its own counters there every second, see
  ``gateway.counters``) and the health sweep's checks and failures
  (incremented by the sweep, ``workloads.recovery.health_checks_record``).

A prometheus_client multiprocess directory under ``VAR_DIR`` would only cover
processes sharing one file system, and the docker-compose services do not.

Families (all prefixed ``arbitrage_``):

=========================================== ========= ==========================================
``workloads{state}``                        gauge     workloads per state, every state (0 included)
``workflow_step_duration_seconds{kind,step}`` histogram first start → success of each succeeded step
                                                      (retries and waits included)
``workflow_step_failures_total{kind,step}`` counter   steps that gave their run up
``time_to_running_seconds{kind}``           histogram run created → workload RUNNING (register-routing
                                                      done), provision and migrate runs
``interruptions_total{signal}``             counter   RUNNING → INTERRUPTED, by the signal that came first
``migrations_total{outcome}``               counter   finished migration runs: succeeded, failed, cancelled
``health_checks_total{provider}``           counter   health checks made by the sweep
``health_check_failures_total{provider}``   counter   of which failed
``gateway_requests_total{code,class}``      counter   gateway answers by status (499: client went away)
``gateway_upstream_latency_seconds``        histogram proxied request → upstream response headers
``gateway_upstream_errors_total{reason}``   counter   upstreams that refused, failed or timed out
``month_spend_usd{provider}``               gauge     this UTC month's spend, running instances up to now
``month_on_demand_equivalent_usd{provider}`` gauge    the same hours at on-demand prices
``month_saving_usd{provider}``              gauge     on-demand equivalent minus spend
``metrics_source_up{source}``               gauge     1 when that source answered this scrape, else 0
=========================================== ========= ==========================================

Spend follows ``billing.selectors.customer_monthly_summary``, summed over every
customer: a bill wholly inside the month counts as written; any other segment
(running, crossing the month's start, or ended but not billed yet) counts for
its seconds inside the month, priced like a bill; a segment bought without a
known on-demand price claims no saving.
"""

from __future__ import annotations

import hmac
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.cache import caches
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_safe
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from billing.money import ZERO
from billing.selectors import monthly_provider_totals
from gateway.counters import LATENCY_BUCKETS, published_counters
from placement.models import PoolStats
from placement.selectors import pool_estimates
from workloads.models import (
    RunStatus,
    StepStatus,
    WorkflowKind,
    WorkflowRun,
    WorkflowStep,
    Workload,
    WorkloadEvent,
    WorkloadStatus,
)
from workloads.recovery import HEALTH_KEY
from workloads.workflows.engine import WORKFLOWS

logger = logging.getLogger(__name__)

PREFIX = "arbitrage_"
STEP_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
RUNNING_BUCKETS = (10.0, 30.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0, 900.0, 1800.0, 3600.0)
INTERRUPTION_SIGNALS = ("agent", "cloud", "rebalance", "operator")
MIGRATION_OUTCOMES = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)


def clock() -> datetime:
    """Now (tests replace it to price running instances at a fixed instant)."""
    return timezone.now()


# --- access and the view -------------------------------------------------------------


def metrics_access(request: HttpRequest) -> int | None:
    """``None`` when the request may read the metrics, else the status to refuse it with (401 or 403).

    Admitted: anyone with ``METRICS_PUBLIC``; ``Authorization: Bearer <METRICS_TOKEN>``
    when a token is set (constant-time compare); a signed-in active staff user.
    """
    if settings.METRICS_PUBLIC:
        return None
    scheme, _, credential = request.headers.get("Authorization", "").strip().partition(" ")
    bearer = credential.strip() if scheme.lower() == "bearer" else ""
    token = settings.METRICS_TOKEN
    if token and bearer and hmac.compare_digest(bearer.encode(), token.encode()):
        return None
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_active and user.is_staff:
        return None
    if user is not None and user.is_authenticated and not bearer:
        return 403
    return 401


@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    refused = metrics_access(request)
    if refused == 401:
        return HttpResponse(
            "Metrics need a staff session or Authorization: Bearer <METRICS_TOKEN>.\n",
            status=401,
            content_type="text/plain; charset=utf-8",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    if refused is not None:
        return HttpResponse("Metrics are for staff users.\n", status=403, content_type="text/plain; charset=utf-8")
    response = HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_PLAIN_0_0_4)
    response["Cache-Control"] = "no-store"
    return response


# --- writes from other processes -------------------------------------------------------


def _provider_label(provider: str) -> str:
    return provider if provider in settings.CLOUD_PROVIDERS else "other"


# --- reading: one source per function, each yields its families ---------------------------


def _histogram(
    name: str, documentation: str, labels: list[str], buckets: tuple[float, ...]
) -> tuple[HistogramMetricFamily, Callable[[list[str], list[int], int, float], None]]:
    family = HistogramMetricFamily(PREFIX + name, documentation, labels=labels)

    def add(values: list[str], cumulative: list[int], count: int, total: float) -> None:
        points = [(_bound(bound), float(n)) for bound, n in zip(buckets, cumulative, strict=True)]
        family.add_metric(values, buckets=[*points, ("+Inf", float(count))], sum_value=total)

    return family, add


def _bound(value: float) -> str:
    return repr(float(value))


def _seconds(value: timedelta | float | int | None) -> float:
    if value is None:
        return 0.0
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value) / 1_000_000  # a backend that sums durations as microseconds


def _bucket_counts(duration: str, buckets: tuple[float, ...]) -> dict[str, Count]:
    return {
        f"le_{index}": Count("id", filter=Q(**{f"{duration}__lte": timedelta(seconds=bound)}))
        for index, bound in enumerate(buckets)
    }


def collect_workloads() -> Iterator[Metric]:
    family = GaugeMetricFamily(PREFIX + "workloads", "Workloads in each state.", labels=["state"])
    counts = dict(Workload.objects.order_by().values_list("status").annotate(n=Count("id")))
    for state in WorkloadStatus.values:
        family.add_metric([state], counts.pop(state, 0))
    for state, n in sorted(counts.items()):  # a state added since (none today)
        family.add_metric([state], n)
    yield family


def collect_workflow_steps() -> Iterator[Metric]:
    duration = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
    rows = (
        WorkflowStep.objects.filter(status=StepStatus.SUCCEEDED, started_at__isnull=False, finished_at__isnull=False)
        .annotate(duration=duration)
        .order_by()
        .values("run__kind", "name")
        .annotate(count=Count("id"), total=Sum("duration"), **_bucket_counts("duration", STEP_BUCKETS))
    )
    histogram, add = _histogram(
        "workflow_step_duration_seconds",
        "Workflow steps that succeeded: seconds from their first start to success (retries and waits included).",
        ["kind", "step"],
        STEP_BUCKETS,
    )
    seen = {}
    for row in rows:
        seen[(row["run__kind"], row["name"])] = row
    for kind, step in sorted(_known_steps() | set(seen)):
        row = seen.get((kind, step))
        if row is None:
            add([kind, step], [0] * len(STEP_BUCKETS), 0, 0.0)
        else:
            cumulative = [row[f"le_{index}"] for index in range(len(STEP_BUCKETS))]
            add([kind, step], cumulative, row["count"], _seconds(row["total"]))
    yield histogram

    failures = CounterMetricFamily(
        PREFIX + "workflow_step_failures",
        "Workflow steps that gave their run up (after their retries or waits ran out).",
        labels=["kind", "step"],
    )
    failed = {
        (kind, name): n
        for kind, name, n in WorkflowStep.objects.filter(status=StepStatus.FAILED)
        .order_by()
        .values_list("run__kind", "name")
        .annotate(n=Count("id"))
    }
    for kind, step in sorted(_known_steps() | set(failed)):
        failures.add_metric([kind, step], failed.get((kind, step), 0))
    yield failures


def _known_steps() -> set[tuple[str, str]]:
    return {
        (workflow.kind, name)
        for workflow in WORKFLOWS.values()
        if workflow.kind in WorkflowKind.values
        for name in workflow.step_names
    }


def collect_time_to_running() -> Iterator[Metric]:
    # RUNNING is reached in register-routing: its effects (mark_ready) and its finished_at are one transaction.
    duration = ExpressionWrapper(F("finished_at") - F("run__created_at"), output_field=DurationField())
    rows = {
        row["run__kind"]: row
        for row in WorkflowStep.objects.filter(
            name="register-routing",
            status=StepStatus.SUCCEEDED,
            finished_at__isnull=False,
            run__kind__in=[WorkflowKind.PROVISION, WorkflowKind.MIGRATE],
        )
        .annotate(duration=duration)
        .order_by()
        .values("run__kind")
        .annotate(count=Count("id"), total=Sum("duration"), **_bucket_counts("duration", RUNNING_BUCKETS))
    }
    histogram, add = _histogram(
        "time_to_running_seconds",
        "Seconds from a provision or migrate run's start to its workload RUNNING (routing registered).",
        ["kind"],
        RUNNING_BUCKETS,
    )
    for kind in (WorkflowKind.PROVISION, WorkflowKind.MIGRATE):
        row = rows.get(kind)
        if row is None:
            add([kind], [0] * len(RUNNING_BUCKETS), 0, 0.0)
        else:
            cumulative = [row[f"le_{index}"] for index in range(len(RUNNING_BUCKETS))]
            add([kind], cumulative, row["count"], _seconds(row["total"]))
    yield histogram


def collect_interruptions_and_migrations() -> Iterator[Metric]:
    interruptions = CounterMetricFamily(
        PREFIX + "interruptions",
        "Workloads moved RUNNING → INTERRUPTED, by the signal that came first "
        "(agent, cloud; rebalance and operator are planned moves).",
        labels=["signal"],
    )
    by_signal: Counter[str] = Counter()
    for signal, n in (
        WorkloadEvent.objects.filter(kind=WorkloadEvent.Kind.TRANSITION, name="spot_interrupt")
        .order_by()
        .values_list("detail__signal")
        .annotate(n=Count("id"))
    ):
        by_signal[str(signal) if signal else "unknown"] += n
    for signal in sorted(set(INTERRUPTION_SIGNALS) | set(by_signal)):
        interruptions.add_metric([signal], by_signal.get(signal, 0))
    yield interruptions

    migrations = CounterMetricFamily(
        PREFIX + "migrations", "Finished migration workflow runs, by outcome.", labels=["outcome"]
    )
    by_outcome = dict(
        WorkflowRun.objects.filter(kind=WorkflowKind.MIGRATE, status__in=MIGRATION_OUTCOMES)
        .order_by()
        .values_list("status")
        .annotate(n=Count("id"))
    )
    for outcome in MIGRATION_OUTCOMES:
        migrations.add_metric([outcome], by_outcome.get(outcome, 0))
    yield migrations


def collect_pools() -> Iterator[Metric]:
    """What the fleet has seen of each pool, as the policy is told it (placement.selectors.pool_estimates)."""
    labels = ["provider", "region", "zone", "instance_type"]
    lifetime = GaugeMetricFamily(
        PREFIX + "pool_expected_lifetime_seconds", "Expected spot lifetime of a pool (fleet estimate).", labels=labels
    )
    refusal = GaugeMetricFamily(
        PREFIX + "pool_refusal_rate", "Chance a spot launch in a pool is refused.", labels=labels
    )
    preemptions = CounterMetricFamily(
        PREFIX + "pool_preemptions", "Spot instances reclaimed in a pool, as seen by the fleet.", labels=labels
    )
    rows = list(PoolStats.objects.filter(market="spot"))
    pools = [(row.provider, row.region, row.availability_zone, row.instance_type) for row in rows]
    estimates = pool_estimates(pools=pools)
    for row, pool in zip(rows, pools, strict=True):
        values = [_provider_label(row.provider), row.region, row.availability_zone, row.instance_type]
        lifetime.add_metric(values, estimates[pool].expected_lifetime_seconds)
        refusal.add_metric(values, estimates[pool].refusal_rate)
        preemptions.add_metric(values, row.preemptions_total)
    yield from (lifetime, refusal, preemptions)


def collect_health() -> Iterator[Metric]:
    providers = [*settings.CLOUD_PROVIDERS, "other"]
    keys = {
        (what, provider): HEALTH_KEY.format(what=what, provider=provider)
        for what in ("checks", "failures")
        for provider in providers
    }
    found = caches["routing"].get_many(list(keys.values()))
    for what, documentation in (
        ("checks", "Health checks made by the health sweep."),
        ("failures", "Health checks that failed (no answer, an error status, or too slow)."),
    ):
        name = "health_checks" if what == "checks" else "health_check_failures"
        family = CounterMetricFamily(PREFIX + name, documentation, labels=["provider"])
        for provider in providers:
            family.add_metric([provider], int(found.get(keys[(what, provider)]) or 0))
        yield family


def collect_gateway() -> Iterator[Metric]:
    by_code: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    buckets = [0] * (len(LATENCY_BUCKETS) + 1)
    latency_count, latency_total = 0, 0.0
    for state in published_counters():
        by_code.update({str(code): int(n) for code, n in state.get("responses_by_status", {}).items()})
        errors.update({str(reason): int(n) for reason, n in state.get("upstream_errors", {}).items()})
        published = state.get("upstream_latency_buckets") or []
        if len(published) == len(buckets):
            buckets = [mine + int(theirs) for mine, theirs in zip(buckets, published, strict=True)]
        latency_count += int(state.get("proxied_total", 0))
        latency_total += float(state.get("upstream_seconds_total", 0.0))

    requests = CounterMetricFamily(
        PREFIX + "gateway_requests",
        "Requests the routing gateway answered, by status code (499: the client went away).",
        labels=["code", "class"],
    )
    for code in sorted(by_code, key=lambda code: (len(code), code)):
        requests.add_metric([code, f"{code[:1]}xx"], by_code[code])
    yield requests

    histogram, add = _histogram(
        "gateway_upstream_latency_seconds",
        "Seconds from sending a proxied request to the instance's response headers.",
        [],
        LATENCY_BUCKETS,
    )
    cumulative, running = [], 0
    for n in buckets[: len(LATENCY_BUCKETS)]:
        running += n
        cumulative.append(running)
    add([], cumulative, latency_count, latency_total)
    yield histogram

    upstream_errors = CounterMetricFamily(
        PREFIX + "gateway_upstream_errors",
        "Proxied requests whose instance refused, failed or timed out, by reason.",
        labels=["reason"],
    )
    for reason in sorted(errors):
        upstream_errors.add_metric([reason], errors[reason])
    yield upstream_errors


def month_spend_by_provider(now: datetime) -> dict[str, tuple[Decimal, Decimal]]:
    """``{provider: (spend, on-demand equivalent)}`` of the UTC month of ``now``, over every customer."""
    totals = monthly_provider_totals(month=now.astimezone(UTC).date(), now=now)
    return {row.provider: (row.spend, row.on_demand_equivalent) for row in totals}


def collect_spend() -> Iterator[Metric]:
    totals = month_spend_by_provider(clock())
    families = {
        "spend": GaugeMetricFamily(
            PREFIX + "month_spend_usd", "This UTC month's spend (running instances up to now).", labels=["provider"]
        ),
        "on_demand": GaugeMetricFamily(
            PREFIX + "month_on_demand_equivalent_usd",
            "This UTC month's instance hours at on-demand prices.",
            labels=["provider"],
        ),
        "saving": GaugeMetricFamily(
            PREFIX + "month_saving_usd",
            "This UTC month's saving: on-demand equivalent minus spend.",
            labels=["provider"],
        ),
    }
    for provider in sorted(set(settings.CLOUD_PROVIDERS) | set(totals)):
        spend, on_demand = totals.get(provider, (ZERO, ZERO))
        families["spend"].add_metric([provider], float(spend))
        families["on_demand"].add_metric([provider], float(on_demand))
        families["saving"].add_metric([provider], float(on_demand - spend))
    yield from families.values()


SOURCES: dict[str, Callable[[], Iterator[Metric]]] = {
    "workloads": collect_workloads,
    "workflow_steps": collect_workflow_steps,
    "time_to_running": collect_time_to_running,
    "interruptions": collect_interruptions_and_migrations,
    "health": collect_health,
    "pools": collect_pools,
    "gateway": collect_gateway,
    "spend": collect_spend,
}


class ArbitrageCollector:
    """Every family above, read at scrape time; a source that fails is left out and reported down."""

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            PREFIX + "metrics_source_up", "1 when the source answered this scrape, else 0.", labels=["source"]
        )
        for name, source in SOURCES.items():
            try:
                families = list(source())
            except Exception:
                logger.exception("metrics: source %s failed", name)
                up.add_metric([name], 0)
                continue
            up.add_metric([name], 1)
            yield from families
        yield up


REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(ArbitrageCollector())
