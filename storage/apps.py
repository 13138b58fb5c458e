from django.apps import AppConfig


class StorageConfig(AppConfig):
    """Per-workload object storage, checkpoints and retention (docs/architecture.md §9); filled by its issue."""

    name = "storage"
    default_auto_field = "django.db.models.BigAutoField"
