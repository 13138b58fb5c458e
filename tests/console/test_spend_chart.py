"""The dashboard's spot and on-demand spend and its chart of the month's spend per day, and the segments' market."""

import re
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from billing.selectors import DaySpend
from console import selectors
from console.admin import spend_chart_svg
from tests.factories import WorkloadFactory, WorkloadInstanceFactory
from workloads.models import WorkloadStatus

S = WorkloadStatus
D = Decimal
pytestmark = pytest.mark.django_db
NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
MARCH = date(2026, 3, 1)


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def clock(monkeypatch):
    """The whole application's clock stands at NOW (set before the operator signs in)."""
    monkeypatch.setattr(timezone, "now", lambda: NOW)
    return NOW


@pytest.fixture
def operator(clock, client):
    user = get_user_model().objects.create_superuser("operator", "op@example.com", "a-long-password-1")
    client.force_login(user)
    return client


@pytest.fixture
def march(clock):
    """Two customers' March 2026 up to NOW, on spot and, where a deadline needed it, on demand.

    2 March: 4 h spot at 0.36 (on demand 1.08) = 1.44, then 2 h on demand at 1.08 = 2.16;
    9-10 March: on demand at 0.80 from 22:00 to 04:00: 2 h = 1.60 on the 9th, 4 h = 3.20 on the 10th;
    15 March: spot at 0.10 (on demand 0.40) running since 06:00, 6 h = 0.60 up to NOW.
    """
    trainer = WorkloadFactory(status=S.TERMINATED, name="trainer")
    render = WorkloadFactory(status=S.RUNNING, name="render")
    WorkloadInstanceFactory(
        workload=trainer, started_at=at(2026, 3, 2, 8), terminated_at=at(2026, 3, 2, 12),
        spot_price=D("0.360000"), on_demand_price=D("1.080000"),
    )  # fmt: skip
    WorkloadInstanceFactory(
        workload=trainer, market="on_demand", started_at=at(2026, 3, 2, 12), terminated_at=at(2026, 3, 2, 14),
        spot_price=D("1.080000"), on_demand_price=D("1.080000"),
    )  # fmt: skip
    WorkloadInstanceFactory(
        workload=render, market="on_demand", provider="gcp", region="us-central1", instance_type="n2-standard-4",
        started_at=at(2026, 3, 9, 22), terminated_at=at(2026, 3, 10, 4),
        spot_price=D("0.800000"), on_demand_price=D("0.800000"),
    )  # fmt: skip
    WorkloadInstanceFactory(
        workload=render, started_at=at(2026, 3, 15, 6), spot_price=D("0.100000"), on_demand_price=D("0.400000")
    )
    return trainer, render


def numbers(tag: str, *names: str) -> tuple[float, ...]:
    return tuple(float(re.search(rf'\b{name}="([-0-9.]+)"', tag).group(1)) for name in names)


def test_month_spend_splits_spot_and_on_demand(march):
    month = selectors.console_month_spend(now=NOW)

    assert (month.spot_spend, month.on_demand_spend) == (D("2.040000"), D("6.960000"))
    assert month.spot_spend + month.on_demand_spend == month.spend == D("9.000000")
    assert (month.on_demand_equivalent, month.saving) == (D("13.680000"), D("4.680000"))
    assert month.month == MARCH


def test_the_dashboard_renders_the_chart_with_both_series_and_the_all_on_demand_line(operator, march):
    page = operator.get(reverse("admin:workloads_console"))

    assert page.status_code == 200
    html = page.content.decode()
    # The month's cards: spend split into spot and on demand.
    assert re.search(r'id="spot-spend".*?<span class="figure">\$2\.04</span>', html, re.S)
    assert re.search(r'id="on-demand-spend".*?<span class="figure">\$6\.96</span>', html, re.S)
    # The chart: inline SVG drawn on the server, nothing fetched, no script.
    [svg] = re.findall(r'<svg xmlns="http://www.w3.org/2000/svg" class="spend-chart".*?</svg>', html, re.S)
    assert (
        'aria-label="Spend per day, March 2026 (UTC): spot $2.04, on demand $6.96; '
        'all on demand the same hours would have cost $13.68"'
    ) in svg
    assert "<script" not in svg and "href" not in svg
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    # Legend and axes.
    for text in (">spot<", ">on demand (fallback)<", ">the same hours all on demand<",
                 ">day of March 2026 (UTC)<", ">USD per day<", ">$0<", ">$8<"):  # fmt: skip
        assert text in svg, text
    # Stacked bars: spot on 2 and 15 March, on demand on 2, 9 and 10 March (plus one swatch each in the legend).
    assert svg.count('class="spend-spot"') == 1 + 2
    assert svg.count('class="spend-on-demand"') == 1 + 3
    days = dict(re.findall(r'<g data-day="(\d{4}-\d{2}-\d{2})">(.*?)</g>', svg, re.S))
    assert sorted(days) == [f"2026-03-{n:02d}" for n in range(1, 16)]  # every day begun, none after NOW
    second = "2026-03-02 (UTC): spot $1.44, on demand $2.16, all on demand $6.48; 6.000000 instance hours"
    assert second in days["2026-03-02"]
    assert "spot $0.000000, on demand $3.20, all on demand $3.20" in days["2026-03-10"]
    # The line of the same hours all on demand: one point a day begun, drawn over the bars.
    [path] = re.findall(r'<path d="([^"]+)" class="spend-all-on-demand"/>', svg)
    assert path.startswith("M") and path.count("L") == 14
    assert svg.count('class="spend-all-on-demand-point"') == 15
    assert "2026-03-02: all on demand $6.48" in svg


def test_the_bars_stack_on_demand_on_spot_and_the_line_marks_the_all_on_demand_cost(operator, march):
    svg = str(operator.get(reverse("admin:workloads_console")).context["spend_chart"])
    day = re.search(r'<g data-day="2026-03-02">(.*?)</g>', svg, re.S).group(1)
    [spot] = re.findall(r'<rect [^>]*class="spend-spot"/>', day)
    [on_demand] = re.findall(r'<rect [^>]*class="spend-on-demand"/>', day)
    point = re.findall(r'<circle [^>]*class="spend-all-on-demand-point">', svg)[1]  # 2 March

    # The axis tops at $8 over 184 px from y=218: 23 px a dollar.
    assert numbers(spot, "y", "height") == (184.9, 33.1)  # 1.44 of spot
    assert numbers(on_demand, "y", "height") == (135.2, 49.7)  # 2.16 on demand, stacked on it
    assert numbers(point, "cy") == (69.0,)  # 6.48 all on demand, above the bar
    assert numbers(spot, "x") == numbers(on_demand, "x")


def test_the_chart_of_an_on_demand_only_day_reaches_the_line_and_a_spot_day_stays_under_it():
    days = [
        DaySpend(date(2026, 3, 1), D("2"), D("0.200000"), D(0), D("0.800000")),
        DaySpend(date(2026, 3, 2), D("2"), D(0), D("0.800000"), D("0.800000")),
        DaySpend(date(2026, 3, 3), D(0), D(0), D(0), D(0)),
    ]

    svg = str(spend_chart_svg(days, month=MARCH))

    bars = dict(re.findall(r'<g data-day="(2026-03-0\d)"><title>[^<]*</title>(.*?)</g>', svg))
    points = [numbers(tag, "cy")[0] for tag in re.findall(r'<circle [^>]*class="spend-all-on-demand-point">', svg)]
    spot_top = numbers(bars["2026-03-01"], "y")[0]
    on_demand_top = numbers(bars["2026-03-02"], "y")[0]
    assert points[0] < spot_top  # the saving is the gap
    assert points[1] == on_demand_top  # on demand saves nothing
    assert bars["2026-03-03"] == ""  # a day with nothing run has no bar, its point sits on the axis
    assert len(points) == 3
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "http" not in svg.replace("http://www.w3.org/2000/svg", "")


def test_the_chart_of_a_month_with_nothing_run_says_so():
    assert "Nothing has run this month yet" in spend_chart_svg([], month=MARCH)
    assert "Nothing has run this month yet" in spend_chart_svg(
        [DaySpend(date(2026, 3, 1), D(0), D(0), D(0), D(0))], month=MARCH
    )


def test_the_workload_page_shows_each_segments_market(operator, march):
    trainer, _ = march

    page = operator.get(reverse("admin:workloads_workload_change", args=[trainer.id]))

    assert page.status_code == 200
    assert [segment.market for segment in page.context["console"].segments] == ["spot", "on_demand"]
    html = page.content.decode()
    assert "<th>Market</th>" in html
    assert re.search(r'data-market="spot">spot</span>', html)
    assert re.search(r'data-market="on_demand">on demand</span>', html)
