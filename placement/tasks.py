"""Celery tasks: thin wrappers that call one service."""

from __future__ import annotations

from celery import shared_task

from placement import services


@shared_task(name="placement.catalog_refresh")
def catalog_refresh(provider: str | None = None) -> list[str]:
    """Refresh one provider's prices, or every provider in ``PRICE_SOURCES`` (the beat schedule)."""
    refreshes = services.catalog_refresh_all() if provider is None else [services.catalog_refresh(provider=provider)]
    return [f"{refresh.provider}: {refresh.status}" for refresh in refreshes]
