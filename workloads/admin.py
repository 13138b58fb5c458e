"""Operator console for customers, keys and workloads."""

from __future__ import annotations

from django.contrib import admin, messages

from arbitrage.errors import DomainError
from workloads import services
from workloads.errors import TransitionRefused
from workloads.models import (
    ApiKey,
    Customer,
    HealthMonitor,
    Notification,
    WorkflowRun,
    WorkflowStep,
    Workload,
    WorkloadEvent,
    WorkloadInstance,
    WorkloadRouting,
)


class ApiKeyInline(admin.TabularInline):
    model = ApiKey
    extra = 0
    fields = ["name", "prefix", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["prefix", "created_at", "last_used_at"]
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False  # keys are made with the "Create API key" action, which shows the key once


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ["name", "id", "max_concurrent_workloads", "webhook_url", "created_at"]
    search_fields = ["id", "name"]
    readonly_fields = ["id", "created_at", "updated_at"]
    inlines = [ApiKeyInline]
    actions = ["create_api_key"]

    @admin.action(description="Create an API key (shown once)")
    def create_api_key(self, request, queryset) -> None:
        for customer in queryset:
            _, raw_key = services.api_key_create(customer=customer, name="admin")
            self.message_user(
                request,
                f"New API key for {customer.name}: {raw_key} (copy it now; it is not stored).",
                messages.WARNING,
            )


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["prefix", "name", "customer", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["customer"]
    search_fields = ["prefix", "name", "customer__name"]
    readonly_fields = ["id", "customer", "prefix", "key_hash", "created_at", "last_used_at"]
    actions = ["revoke"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset) -> None:
        for api_key in queryset:
            services.api_key_revoke(api_key=api_key)
        self.message_user(request, f"Revoked {queryset.count()} key(s).")


class WorkloadEventInline(admin.TabularInline):
    model = WorkloadEvent
    extra = 0
    can_delete = False
    fields = ["created_at", "kind", "name", "from_status", "to_status", "message"]
    readonly_fields = fields
    ordering = ["created_at", "id"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class WorkloadInstanceInline(admin.TabularInline):
    model = WorkloadInstance
    extra = 0
    can_delete = False
    fields = [
        "provider",
        "region",
        "availability_zone",
        "instance_type",
        "instance_id",
        "public_ip",
        "status",
        "spot_price",
        "created_at",
        "terminated_at",
    ]
    readonly_fields = fields
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Workload)
class WorkloadAdmin(admin.ModelAdmin):
    list_display = ["name", "id", "customer", "status", "recovery_policy", "created_at", "started_at"]
    list_filter = ["status", "recovery_policy", "customer", "instances__provider"]
    search_fields = ["=id", "name", "customer__name"]
    readonly_fields = [
        "id",
        "customer",
        "status",
        "endpoint",
        "idempotency_key",
        "started_at",
        "terminated_at",
        "termination_reason",
        "failure_reason",
        "created_at",
        "updated_at",
    ]
    fields = ["name", "recovery_policy", "requirements", "config", *readonly_fields]
    inlines = [WorkloadInstanceInline, WorkloadEventInline]
    actions = ["terminate", "simulate_spot_interruption"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request) -> bool:
        return False  # workloads are submitted through the API or `manage.py workload`

    @admin.action(description="Terminate selected workloads")
    def terminate(self, request, queryset) -> None:
        for workload in queryset:
            try:
                services.workload_terminate(workload_id=workload.id, reason="Terminated by an operator.")
            except TransitionRefused as exc:
                self.message_user(request, exc.message, messages.ERROR)
            else:
                self.message_user(request, f"{workload.name}: terminating.")

    @admin.action(description="Simulate a spot interruption (local cloud, 30 s notice)")
    def simulate_spot_interruption(self, request, queryset) -> None:
        for workload in queryset:
            try:
                reclaim_at = services.workload_simulate_interruption(workload_id=workload.id, grace_seconds=30)
            except DomainError as error:
                self.message_user(request, f"{workload.name}: {error.message}", messages.ERROR)
            else:
                self.message_user(request, f"{workload.name}: notice given, reclaimed at {reclaim_at:%H:%M:%S}.")


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
