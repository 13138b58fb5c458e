"""The operator console inside the admin: the dashboard and a workload's page (docs/architecture.md §13).

It extends the workloads app's ``WorkloadAdmin`` (re-registered here), because
the console reads billing and storage, which the workloads app may not import.
The URLs stay the workloads admin's: ``/admin/workloads/workload/console/`` and
each workload's change page.
"""

from __future__ import annotations

import calendar
import math
from collections.abc import Sequence
from datetime import date
from decimal import Decimal

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from billing.money import CURRENCY, MONEY
from billing.selectors import DaySpend
from console import selectors
from workloads.admin import ACTION_STATES, OPERATOR_ACTIONS, STATE_COLOURS, WorkloadAdmin, state_badge, status_badge
from workloads.models import Workload

# The index keeps Django's app list and leads with a link to the console's dashboard.
admin.site.index_template = "admin/workloads/index_with_console.html"


def money(value: Decimal) -> str:
    """US dollars for the console: cents from $1 up, below that the 6 places bills are kept in."""
    if abs(value) >= 1:
        return f"${value:,.2f}"
    return f"${value.quantize(Decimal('0.000001')):.6f}"


# --- this month's spend per day: inline SVG made here, nothing fetched by the browser ----------

SPEND_CHART_WIDTH, SPEND_CHART_HEIGHT = 720, 260
SPEND_PAD_LEFT, SPEND_PAD_RIGHT, SPEND_PAD_TOP, SPEND_PAD_BOTTOM = 72, 16, 34, 42
SPEND_TICKS = 4
SPOT_COLOUR, ON_DEMAND_COLOUR, ALL_ON_DEMAND_COLOUR = "#417690", "#e08e0b", "#b91c1c"


def _nice_step(rough: Decimal) -> Decimal:
    """The tick step just at or above ``rough`` (> 0): 1, 2, 2.5 or 5 times a power of ten, exactly."""
    power = Decimal(1).scaleb(math.floor(math.log10(rough)))
    return next(
        m * power for m in (Decimal(1), Decimal(2), Decimal("2.5"), Decimal(5), Decimal(10)) if m * power >= rough
    )


def _tick_label(value: Decimal, step: Decimal) -> str:
    """``$0.25``: as many decimals as the step needs, at most the 6 bills are kept in."""
    decimals = min(max(0, -step.normalize().as_tuple().exponent), 6)
    return f"${value:,.{decimals}f}"


def spend_chart_svg(days: Sequence[DaySpend], *, month: date) -> SafeString:
    """Stacked bars of each UTC day's spot and on-demand spend, under a line of the same hours all on demand.

    ``days`` are ``billing.selectors.daily_spend``'s rows for ``month`` (the days
    begun so far); the axis spans every day of the month. The gap between a
    bar's top and the line is that day's saving; an on-demand bar reaches the
    line. Every value put into the markup is a number or escaped text.
    """
    spot_total = sum((day.spot_spend for day in days), Decimal(0))
    on_demand_total = sum((day.on_demand_spend for day in days), Decimal(0))
    equivalent_total = sum((day.on_demand_equivalent for day in days), Decimal(0))
    if not any(day.spend or day.on_demand_equivalent for day in days):
        return mark_safe('<p class="spend-chart-empty">Nothing has run this month yet.</p>')
    month = month.replace(day=1)
    slots = calendar.monthrange(month.year, month.month)[1]
    highest = max(max(day.spend, day.on_demand_equivalent) for day in days)
    step = max(_nice_step(highest / SPEND_TICKS), MONEY)  # never finer than the millionth bills are kept to
    ticks = math.ceil(highest / step)  # the axis tops at the first tick at or above the highest figure
    top = float(step * ticks)
    plot_w = SPEND_CHART_WIDTH - SPEND_PAD_LEFT - SPEND_PAD_RIGHT
    plot_h = SPEND_CHART_HEIGHT - SPEND_PAD_TOP - SPEND_PAD_BOTTOM
    bottom = SPEND_PAD_TOP + plot_h
    slot_w = plot_w / slots
    bar_w = slot_w * 0.7

    def y(value: Decimal | float) -> float:
        return bottom - float(value) / top * plot_h

    def centre(day: date) -> float:
        return SPEND_PAD_LEFT + (day.day - 0.5) * slot_w

    grid = "".join(
        f'<line x1="{SPEND_PAD_LEFT}" x2="{SPEND_CHART_WIDTH - SPEND_PAD_RIGHT}" y1="{y(value):.1f}" '
        f'y2="{y(value):.1f}" class="spend-grid"/><text x="{SPEND_PAD_LEFT - 6}" y="{y(value) + 4:.1f}" '
        f'text-anchor="end">{escape(_tick_label(value, step))}</text>'
        for value in (step * i for i in range(ticks + 1))
    )
    bars = []
    for day in days:
        left = centre(day.day) - bar_w / 2
        tip = (
            f"{day.day:%Y-%m-%d} (UTC): spot {money(day.spot_spend)}, on demand {money(day.on_demand_spend)}, "
            f"all on demand {money(day.on_demand_equivalent)}; {day.instance_hours} instance hours"
        )
        rects = []
        if day.spot_spend:
            rects.append(
                f'<rect x="{left:.1f}" y="{y(day.spot_spend):.1f}" width="{bar_w:.1f}" '
                f'height="{bottom - y(day.spot_spend):.1f}" class="spend-spot"/>'
            )
        if day.on_demand_spend:
            rects.append(
                f'<rect x="{left:.1f}" y="{y(day.spend):.1f}" width="{bar_w:.1f}" '
                f'height="{y(day.spot_spend) - y(day.spend):.1f}" class="spend-on-demand"/>'
            )
        bars.append(f'<g data-day="{day.day:%Y-%m-%d}"><title>{escape(tip)}</title>{"".join(rects)}</g>')
    points = [(centre(day.day), y(day.on_demand_equivalent)) for day in days]
    line = "M" + "L".join(f"{px:.1f},{py:.1f}" for px, py in points)
    dots = "".join(
        f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" class="spend-all-on-demand-point">'
        f"<title>{escape(f'{day.day:%Y-%m-%d}: all on demand {money(day.on_demand_equivalent)}')}</title></circle>"
        for day, (px, py) in zip(days, points, strict=True)
    )
    labelled = [1, *(n for n in range(5, slots - 2, 5)), slots]  # every fifth day, the first and the last
    day_labels = "".join(
        f'<text x="{SPEND_PAD_LEFT + (number - 0.5) * slot_w:.1f}" y="{bottom + 14}" text-anchor="middle">'
        f"{number}</text>"
        for number in labelled
    )
    legend_y = 14
    legend = (
        f'<g class="spend-legend">'
        f'<rect x="{SPEND_PAD_LEFT}" y="{legend_y - 9}" width="12" height="10" class="spend-spot"/>'
        f'<text x="{SPEND_PAD_LEFT + 17}" y="{legend_y}">spot</text>'
        f'<rect x="{SPEND_PAD_LEFT + 60}" y="{legend_y - 9}" width="12" height="10" class="spend-on-demand"/>'
        f'<text x="{SPEND_PAD_LEFT + 77}" y="{legend_y}">on demand (fallback)</text>'
        f'<line x1="{SPEND_PAD_LEFT + 210}" x2="{SPEND_PAD_LEFT + 232}" y1="{legend_y - 4}" y2="{legend_y - 4}" '
        'class="spend-all-on-demand"/>'
        f'<text x="{SPEND_PAD_LEFT + 237}" y="{legend_y}">the same hours all on demand</text>'
        "</g>"
    )
    label = (
        f"Spend per day, {month:%B %Y} (UTC): spot {money(spot_total)}, on demand {money(on_demand_total)}; "
        f"all on demand the same hours would have cost {money(equivalent_total)}"
    )
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="spend-chart" width="{SPEND_CHART_WIDTH}" '
        f'height="{SPEND_CHART_HEIGHT}" viewBox="0 0 {SPEND_CHART_WIDTH} {SPEND_CHART_HEIGHT}" role="img" '
        f'aria-label="{escape(label)}" '
        'style="font: 11px sans-serif; fill: var(--body-quiet-color, #666); max-width: 100%; height: auto;">'
        f"<title>{escape(label)}</title>"
        "<style>.spend-grid{stroke:var(--hairline-color,#e5e5e5);stroke-width:1}"
        f".spend-axis{{stroke:var(--body-quiet-color,#666);stroke-width:1}}"
        f".spend-spot{{fill:{SPOT_COLOUR}}}.spend-on-demand{{fill:{ON_DEMAND_COLOUR}}}"
        f".spend-all-on-demand{{fill:none;stroke:{ALL_ON_DEMAND_COLOUR};stroke-width:2}}"
        f".spend-all-on-demand-point{{fill:{ALL_ON_DEMAND_COLOUR}}}</style>"
        f"{legend}{grid}{''.join(bars)}"
        f'<path d="{line}" class="spend-all-on-demand"/>{dots}'
        f'<line x1="{SPEND_PAD_LEFT}" x2="{SPEND_CHART_WIDTH - SPEND_PAD_RIGHT}" y1="{bottom}" y2="{bottom}" '
        'class="spend-axis"/>'
        f"{day_labels}"
        f'<text x="{SPEND_PAD_LEFT + plot_w / 2:.1f}" y="{SPEND_CHART_HEIGHT - 6}" text-anchor="middle">'
        f"{escape(f'day of {month:%B %Y} (UTC)')}</text>"
        f'<text x="14" y="{SPEND_PAD_TOP + plot_h / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {SPEND_PAD_TOP + plot_h / 2:.1f})">{escape(f"{CURRENCY} per day")}</text>'
        "</svg>"
    )
    return mark_safe(svg)  # numbers and escaped text only


class ConsoleWorkloadAdmin(WorkloadAdmin):
    def get_urls(self):
        console = path("console/", self.admin_site.admin_view(self.dashboard_view), name="workloads_console")
        return [console, *super().get_urls()]

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        dashboard = selectors.console_dashboard()
        changelist = reverse("admin:workloads_workload_changelist")
        context = {
            **self.admin_site.each_context(request),
            "title": "Operator console",
            "subtitle": None,
            "opts": self.opts,
            "dashboard": dashboard,
            "states": [
                {
                    "status": state.status,
                    "count": state.count,
                    "badge": state_badge(state.status),
                    "colour": STATE_COLOURS[state.status],
                    "url": f"{changelist}?status__exact={state.status}",
                }
                for state in dashboard.states
            ],
            "failures": [(run, state_badge(run.workload.status)) for run in dashboard.failures],
            "spend": {
                "spend": money(dashboard.month.spend),
                "spot": money(dashboard.month.spot_spend),
                "on_demand_spend": money(dashboard.month.on_demand_spend),
                "on_demand": money(dashboard.month.on_demand_equivalent),
                "saving": money(dashboard.month.saving),
            },
            "spend_chart": spend_chart_svg(dashboard.daily.days, month=dashboard.daily.month),
        }
        return TemplateResponse(request, "admin/workloads/console.html", context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        workload = self.get_object(request, object_id)
        if workload is not None:
            console = selectors.workload_console(workload=workload)
            extra_context = {
                **(extra_context or {}),
                "console": console,
                "state_badge": state_badge(workload.status),
                "cost_so_far": money(console.total_cost),
                "run_rows": [
                    {
                        "timeline": timeline,
                        "badge": status_badge(timeline.run.status),
                        "steps": [(row, status_badge(row.step.status)) for row in timeline.steps],
                    }
                    for timeline in console.runs
                ],
                "segment_rows": [(segment, status_badge(segment.instance.status)) for segment in console.segments],
                "notification_rows": [
                    (notification, status_badge(notification.delivery_status)) for notification in console.notifications
                ],
                "operator_actions": [
                    {
                        "name": name,
                        "label": label,
                        "url": reverse("admin:workloads_workload_action", args=[workload.pk, name]),
                    }
                    for name, (label, _) in OPERATOR_ACTIONS.items()
                    if workload.status in ACTION_STATES[name]
                ],
            }
        return super().change_view(request, object_id, form_url, extra_context)


admin.site.unregister(Workload)
admin.site.register(Workload, ConsoleWorkloadAdmin)
