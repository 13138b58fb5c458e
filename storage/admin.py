from django.contrib import admin

from storage.models import WorkloadCheckpoint, WorkloadStorageConfig, WorkloadStorageObject, WorkloadStorageUpload


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
    readonly_fields = ["workload", "object_key", "size_bytes", "checksum", "content_type", "created_at"]


@admin.register(WorkloadCheckpoint)
class WorkloadCheckpointAdmin(admin.ModelAdmin):
    """Checkpoints are made by workloads; operators read them (the beat schedule is under Periodic tasks)."""

    list_display = ["checkpoint_id", "workload", "status", "size_bytes", "created_at", "completed_at"]
    list_filter = ["status"]
    search_fields = ["=workload__id", "checkpoint_id"]
    readonly_fields = [
        "workload",
        "checkpoint_id",
        "status",
        "manifest",
        "size_bytes",
        "created_at",
        "completed_at",
        "error",
    ]


@admin.register(WorkloadStorageUpload)
class WorkloadStorageUploadAdmin(admin.ModelAdmin):
    """Issued upload URLs and the bytes they reserve; made by the API, deleted by the expiry sweep."""

    list_display = ["object_key", "workload", "status", "reserved_bytes", "created_at", "expires_at"]
    list_filter = ["status"]
    search_fields = ["=workload__id", "object_key"]
    readonly_fields = [
        "id",
        "workload",
        "object_key",
        "reserved_bytes",
        "status",
        "multipart_upload_id",
        "checkpoint",
        "created_at",
        "expires_at",
    ]

    def has_add_permission(self, request) -> bool:
        return False
