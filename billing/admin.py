from django.contrib import admin

from billing.models import UsageRecord


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    list_display = [
        "workload",
        "customer",
        "provider",
        "region",
        "instance_type",
        "duration_hours",
        "spot_price_per_hour",
        "total_cost",
        "on_demand_cost",
        "ended_at",
    ]
    list_filter = ["provider", "customer", "region"]
    search_fields = ["=workload__id", "workload__name", "instance__instance_id"]
    readonly_fields = [field.name for field in UsageRecord._meta.fields]
    date_hierarchy = "ended_at"

    def has_add_permission(self, request) -> bool:
        return False
