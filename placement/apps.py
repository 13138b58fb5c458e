from django.apps import AppConfig
from django.conf import settings


class PlacementConfig(AppConfig):
    """Price catalog, optimizer and cloud adapters (docs/architecture.md §7-8)."""

    name = "placement"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from placement.clouds.registry import register_configured_clouds

        register_configured_clouds()
        if settings.LOCAL_CLOUD_ALLOW_COMMANDS and "local" in settings.CLOUD_BACKENDS.values():
            _refuse_without_sandbox()


def _refuse_without_sandbox() -> None:
    """Customer commands need the instance sandbox: stop at start-up, in one line, if it does not work."""
    from arbitrage.env import ConfigError
    from placement.clouds.local.sandbox import SandboxUnavailable, sandbox_check

    try:
        sandbox_check()
    except SandboxUnavailable as unavailable:
        raise ConfigError("LOCAL_CLOUD_ALLOW_COMMANDS", unavailable.message) from None
