from django.apps import AppConfig


class PlacementConfig(AppConfig):
    """Price catalog, optimizer and cloud adapters (docs/architecture.md §7-8)."""

    name = "placement"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from placement.clouds.registry import register_configured_clouds

        register_configured_clouds()
