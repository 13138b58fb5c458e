from django.apps import AppConfig


class FleetConfig(AppConfig):
    """What runs across every workload at once: the arbitrage controller and cloud reconciliation (§15, §16)."""

    name = "fleet"
