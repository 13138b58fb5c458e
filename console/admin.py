"""The operator console inside the admin: the dashboard and a workload's page (docs/architecture.md §13).

It extends the workloads app's ``WorkloadAdmin`` (re-registered here), because
the console reads billing and storage, which the workloads app may not import.
The URLs stay the workloads admin's: ``/admin/workloads/workload/console/`` and
each workload's change page.
"""

from __future__ import annotations

from decimal import Decimal

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse

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
                "on_demand": money(dashboard.month.on_demand_equivalent),
                "saving": money(dashboard.month.saving),
            },
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
