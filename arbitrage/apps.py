from django.apps import AppConfig


class ArbitrageConfig(AppConfig):
    """The project's foundation (docs/architecture.md §12); an app for its commands: serve, preflight."""

    name = "arbitrage"
