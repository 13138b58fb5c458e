from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """What operators see: the admin console and the Prometheus /metrics (docs/architecture.md §13)."""

    name = "console"
