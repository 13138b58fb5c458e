"""Celery tasks: thin wrappers that call one service."""

from __future__ import annotations

from celery import shared_task
from django.db import DatabaseError

from storage import services


@shared_task(name="storage.expire_objects", autoretry_for=(DatabaseError,), retry_backoff=30, max_retries=3)
def expire_objects() -> int:
    """Beat ("Expire storage objects", every 10 minutes): expired upload URLs, then objects past their retention."""
    return services.storage_expiry_sweep()
