"""Operator console for customers, keys and workloads.

The admin index links to the console's dashboard (``console/`` under
workloads): workloads by state, this month's spend and saving, interruptions
and migrations in progress, recent failures and blocked pools. A workload's
page shows every workflow run step by step, its instance segments with their
cost, its notifications and storage, and buttons for the operator actions;
each action calls one service and reports its answer as a message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html

from arbitrage.errors import DomainError
from placement.clouds.base import CloudError
from workloads import recovery, selectors, services
from workloads.models import (
    HealthMonitor,
    Notification,
    WorkflowRun,
    WorkflowStep,
    Workload,
    WorkloadEvent,
    WorkloadInstance,
    WorkloadRouting,
    WorkloadStatus,
)

admin.site.site_header = "Compute arbitrage"
admin.site.site_title = "Compute arbitrage admin"
admin.site.index_title = "Administration"

# --- coloured badges ------------------------------------------------------------------

STATE_COLOURS = {
    WorkloadStatus.PENDING: "#64748b",
    WorkloadStatus.PROVISIONING: "#2563eb",
    WorkloadStatus.RUNNING: "#15803d",
    WorkloadStatus.FAILED: "#b91c1c",
    WorkloadStatus.STOPPING: "#a16207",
    WorkloadStatus.INTERRUPTED: "#c2410c",
    WorkloadStatus.UNHEALTHY: "#9333ea",
    WorkloadStatus.TERMINATED: "#374151",
}
# Workflow runs and steps, notification deliveries, instances (lower-case values).
STEP_COLOURS = {
    "pending": "#64748b",
    "running": "#2563eb",
    "succeeded": "#15803d",
    "failed": "#b91c1c",
    "cancelled": "#6b7280",
    "delivered": "#15803d",
    "no_webhook": "#6b7280",
}
BADGE_STYLE = (
    "display:inline-block;min-width:5.5em;padding:2px 8px;border-radius:9px;color:#fff;background:{};"
    "font-size:11px;font-weight:600;letter-spacing:.03em;text-align:center;line-height:16px;white-space:nowrap"
)


def state_badge(status: str) -> str:
    """A workload state as a coloured badge (safe HTML)."""
    colour = STATE_COLOURS.get(status, "#6b7280")
    return format_html('<span class="state-badge" style="{}">{}</span>', BADGE_STYLE.format(colour), status)


def status_badge(status: str) -> str:
    """A run, step, delivery or instance status as a coloured badge (safe HTML)."""
    colour = STEP_COLOURS.get(status.lower(), "#6b7280")
    return format_html('<span class="status-badge" style="{}">{}</span>', BADGE_STYLE.format(colour), status)


# --- operator actions: each calls one service and answers with a message ---------------

INTERRUPTION_NOTICE_SECONDS = 30


def _terminate(workload: Workload) -> str:
    services.workload_terminate(workload_id=workload.id, reason="Terminated by an operator.")
    return "terminating."


def _retry(workload: Workload) -> str:
    run = services.workload_provision_retry(workload_id=workload.id)
    return f"provisioning retried as a new run ({run.id})."


def _migrate(workload: Workload) -> str:
    run = services.workload_migrate_now(workload_id=workload.id)
    return f"migration started ({run.id})."


def _interrupt(workload: Workload) -> str:
    reclaim_at = recovery.workload_simulate_interruption(
        workload_id=workload.id, grace_seconds=INTERRUPTION_NOTICE_SECONDS
    )
    return f"interruption notice given, reclaimed at {reclaim_at:%H:%M:%S} UTC."


# name -> (button label, service call). The page's buttons and the list's actions share them.
OPERATOR_ACTIONS: dict[str, tuple[str, Callable[[Workload], str]]] = {
    "terminate": ("Terminate", _terminate),
    "retry": ("Retry provisioning", _retry),
    "migrate": ("Migrate now", _migrate),
    "interrupt": ("Simulate interruption", _interrupt),
}
# The states each button is offered in (the services decide; this only hides hopeless buttons).
ACTION_STATES = {
    "terminate": {WorkloadStatus.PENDING, WorkloadStatus.PROVISIONING, WorkloadStatus.RUNNING},
    "retry": {WorkloadStatus.FAILED},
    "migrate": {WorkloadStatus.RUNNING},
    "interrupt": {WorkloadStatus.RUNNING},
}


#: The workload page shows this many of its newest log lines (the API has them all).
RECENT_LOG_LINES = 50


class WorkloadEventInline(admin.TabularInline):
    model = WorkloadEvent
    extra = 0
    can_delete = False
    fields = ["created_at", "kind", "name", "from_status", "to_status", "message"]
    readonly_fields = fields
    ordering = ["created_at", "id"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Workload)
class WorkloadAdmin(admin.ModelAdmin):
    list_display = ["name", "id", "customer", "state", "status_reason", "recovery_policy", "deadline", "created_at"]
    list_filter = ["status", "status_reason", "recovery_policy", "customer", "instances__provider", "instances__market"]
    list_select_related = ["customer"]
    search_fields = ["=id", "name", "customer__name"]
    readonly_fields = [
        "id",
        "customer",
        "state",
        "endpoint",
        "idempotency_key",
        "started_at",
        "terminated_at",
        "termination_reason",
        "failure_reason",
        "status_reason",
        "next_attempt_at",
        "expected_duration_seconds",
        "deadline",
        "on_demand_fallback",
        "progress",
        "created_at",
        "updated_at",
        "recent_log",
    ]
    fields = ["name", "recovery_policy", "requirements", "config", *readonly_fields]
    inlines = [WorkloadEventInline]
    actions = ["terminate", "retry_provisioning", "migrate_now", "simulate_spot_interruption"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request) -> bool:
        return False  # workloads are submitted through the API or `manage.py workload`

    @admin.display(description="progress")
    def progress(self, workload: Workload) -> str:
        progress = selectors.workload_progress(workload=workload)
        parts = [f"{progress.progress_seconds:,.0f} s done"]
        if progress.remaining_seconds is not None:
            parts.append(f"{progress.remaining_seconds:,.0f} s left")
        if progress.on_track is not None:
            parts.append("on track" if progress.on_track else "behind its deadline")
        if progress.market:
            parts.append(f"on {progress.market.replace('_', '-')}")
        return ", ".join(parts)

    @admin.display(description="recent log")
    def recent_log(self, workload: Workload) -> str:
        lines = selectors.workload_log_tail(workload_id=workload.id, count=RECENT_LOG_LINES)
        if not lines:
            return "—"
        text = "\n".join(
            f"{line.position:>6} {line.time:%H:%M:%S} {line.instance_id} {'» ' if line.stream == 'marker' else ''}"
            f"{line.text}"
            for line in lines
        )
        return format_html('<pre style="max-height: 24em; overflow: auto">{}</pre>', text)

    @admin.display(ordering="status", description="state")
    def state(self, workload: Workload) -> str:
        return state_badge(workload.status)

    # --- pages ---------------------------------------------------------------------

    def get_urls(self):
        urls = [
            path(
                "<path:object_id>/action/<str:action>/",
                self.admin_site.admin_view(self.action_view),
                name="workloads_workload_action",
            ),
        ]
        return urls + super().get_urls()

    def action_view(self, request: HttpRequest, object_id: str, action: str) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        workload = self.get_object(request, object_id)
        if workload is None or action not in OPERATOR_ACTIONS:
            raise Http404("No such workload or action.")
        if not self.has_change_permission(request, workload):
            raise PermissionDenied
        self._perform(request, workload, action)
        return HttpResponseRedirect(reverse("admin:workloads_workload_change", args=[workload.pk]))

    # --- actions -------------------------------------------------------------------

    def _perform(self, request: HttpRequest, workload: Workload, action: str) -> None:
        _, call = OPERATOR_ACTIONS[action]
        try:
            outcome = call(workload)
        except (DomainError, CloudError) as error:
            self.message_user(request, f"{workload.name}: {getattr(error, 'message', None) or error}", messages.ERROR)
        else:
            self.message_user(request, f"{workload.name}: {outcome}", messages.SUCCESS)

    def _perform_each(self, request: HttpRequest, queryset: Any, action: str) -> None:
        for workload in queryset:
            self._perform(request, workload, action)

    @admin.action(description="Terminate selected workloads")
    def terminate(self, request, queryset) -> None:
        self._perform_each(request, queryset, "terminate")

    @admin.action(description="Retry failed provisioning (a new run)")
    def retry_provisioning(self, request, queryset) -> None:
        self._perform_each(request, queryset, "retry")

    @admin.action(description="Migrate now to the best other pool")
    def migrate_now(self, request, queryset) -> None:
        self._perform_each(request, queryset, "migrate")

    @admin.action(description="Simulate a spot interruption (local cloud, 30 s notice)")
    def simulate_spot_interruption(self, request, queryset) -> None:
        self._perform_each(request, queryset, "interrupt")


@admin.register(WorkloadInstance)
class WorkloadInstanceAdmin(admin.ModelAdmin):
    list_display = [
        "instance_id",
        "workload",
        "provider",
        "region",
        "instance_type",
        "status",
        "spot_price",
        "created_at",
    ]
    list_filter = ["provider", "status", "region", "workload__customer"]
    search_fields = ["=id", "instance_id", "=workload__id", "workload__name"]
    readonly_fields = [field.name for field in WorkloadInstance._meta.fields]


@admin.register(WorkloadRouting)
class WorkloadRoutingAdmin(admin.ModelAdmin):
    list_display = ["workload", "endpoint", "provider", "region", "instance_id", "updated_at"]
    list_filter = ["provider", "region"]
    search_fields = ["=workload__id", "workload__name", "instance_id", "endpoint"]
    readonly_fields = [field.name for field in WorkloadRouting._meta.fields]


@admin.register(WorkloadEvent)
class WorkloadEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "workload", "kind", "name", "from_status", "to_status", "message"]
    list_filter = ["kind", "to_status", "workload__customer"]
    search_fields = ["=workload__id", "workload__name", "name", "message"]
    readonly_fields = [field.name for field in WorkloadEvent._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False


class WorkflowStepInline(admin.TabularInline):
    model = WorkflowStep
    extra = 0
    can_delete = False
    fields = ["position", "name", "status", "attempts", "started_at", "finished_at", "error", "result"]
    readonly_fields = fields
    ordering = ["position"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(WorkflowRun)
class WorkflowRunAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "workload", "status", "failed_step", "created_at", "finished_at"]
    list_filter = ["kind", "status", "workload__customer"]
    search_fields = ["=id", "=workload__id", "workload__name", "error"]
    readonly_fields = [field.name for field in WorkflowRun._meta.fields]
    inlines = [WorkflowStepInline]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(HealthMonitor)
class HealthMonitorAdmin(admin.ModelAdmin):
    list_display = ["workload", "active", "endpoint", "consecutive_failures", "last_ok_at", "last_latency_ms"]
    list_filter = ["active", "provider"]
    search_fields = ["=workload__id", "workload__name", "instance_id"]
    readonly_fields = [field.name for field in HealthMonitor._meta.fields]


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ["type", "customer", "workload", "delivery_status", "attempts", "last_status_code", "created_at"]
    list_filter = ["type", "delivery_status", "customer"]
    search_fields = ["=id", "=workload__id", "customer__name"]
    readonly_fields = [field.name for field in Notification._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False
