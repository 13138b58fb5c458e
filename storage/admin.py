from django.contrib import admin

from storage.models import WorkloadStorageConfig, WorkloadStorageObject


@admin.register(WorkloadStorageConfig)
class WorkloadStorageConfigAdmin(admin.ModelAdmin):
    list_display = ["workload", "storage_enabled", "storage_quota_bytes", "retention_days", "updated_at"]
    list_filter = ["storage_enabled"]
    search_fields = ["=workload__id", "workload__name"]


@admin.register(WorkloadStorageObject)
class WorkloadStorageObjectAdmin(admin.ModelAdmin):
    list_display = ["object_key", "workload", "size_bytes", "created_at", "expires_at"]
    list_filter = ["workload__customer"]
    search_fields = ["=workload__id", "object_key"]
