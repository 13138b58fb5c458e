from django.apps import AppConfig


class PlacementConfig(AppConfig):
    """Price catalog, optimizer and cloud adapters (DESIGN.md §7-8); filled by their issues."""

    name = "placement"
    default_auto_field = "django.db.models.BigAutoField"
