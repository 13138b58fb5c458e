"""Fills the cloud registry from settings when the app starts."""

from __future__ import annotations

import importlib

from django.conf import settings

from arbitrage.env import ConfigError
from placement.clouds import base
from placement.clouds.local.trace import LocalTracePriceSource, trace_configured

#: Importing a backend's module registers its factory; a cloud's SDK loads only when it is configured.
BACKEND_MODULES = {
    "local": "placement.clouds.local",
    "aws": "placement.clouds.aws",
    "gcp": "placement.clouds.gcp",
    "azure": "placement.clouds.azure",
}


def register_configured_clouds() -> None:
    for backend in set(settings.CLOUD_BACKENDS.values()):
        importlib.import_module(BACKEND_MODULES[backend])
    factories = base.cloud_factories()
    for provider, backend in settings.CLOUD_BACKENDS.items():
        if backend not in factories:
            raise ConfigError("CLOUD_BACKENDS", f"the {backend!r} backend for {provider} is not available")
        base.register_cloud(provider, factories[backend](provider))
    register_price_sources()


def _price_source_class(provider: str) -> type[base.PriceSource]:
    # Imported on demand: a provider's SDK loads only when its price source is configured.
    if provider == "aws":
        from placement.clouds.aws import AwsPriceSource

        return AwsPriceSource
    if provider == "gcp":
        from placement.clouds.gcp import GcpPriceSource

        return GcpPriceSource
    from placement.clouds.azure import AzurePriceSource

    return AzurePriceSource


def register_price_sources() -> None:
    """One price source per provider in ``PRICE_SOURCES``, each reading that cloud's public price API
    (the trace's prices for the provider a trace-driven local cloud stands in for)."""
    for provider in settings.PRICE_SOURCES:
        traced = trace_configured() and provider == settings.LOCAL_CLOUD_TRACE_PROVIDER
        if traced and settings.CLOUD_BACKENDS.get(provider) == "local":
            base.register_price_source(provider, LocalTracePriceSource(provider))
            continue
        base.register_price_source(provider, _price_source_class(provider)())


def custom_commands_refused() -> str:
    """Why a workload's own ``command`` cannot run here ("" if it can).

    A provider on the local cloud runs instances on the service's own machine, which
    takes customer commands only where the operator has enabled their sandbox.
    """
    local = sorted(provider for provider, backend in settings.CLOUD_BACKENDS.items() if backend == "local")
    if not local or settings.LOCAL_CLOUD_ALLOW_COMMANDS:
        return ""
    return (
        f"Custom commands are disabled on this service: {', '.join(local)} run on its local cloud, "
        "which runs only the sample agent unless the operator enables sandboxed commands "
        "(LOCAL_CLOUD_ALLOW_COMMANDS)."
    )
