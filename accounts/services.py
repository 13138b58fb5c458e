"""Writes for customers and their API keys."""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.utils import timezone

from accounts.models import ApiKey, Customer
from accounts.selectors import api_key_hash

API_KEY_PREFIX = "ca_"
LAST_USED_RESOLUTION = timedelta(minutes=1)


def customer_create(
    *,
    name: str,
    max_concurrent_workloads: int | None = None,
    webhook_url: str = "",
    webhook_secret: str = "",
) -> Customer:
    customer = Customer(name=name, webhook_url=webhook_url, webhook_secret=webhook_secret)
    if max_concurrent_workloads is not None:
        customer.max_concurrent_workloads = max_concurrent_workloads
    if webhook_url and not webhook_secret:
        customer.webhook_secret = secrets.token_urlsafe(32)
    customer.full_clean()
    customer.save()
    return customer


def api_key_create(*, customer: Customer, name: str = "default") -> tuple[ApiKey, str]:
    """A new key for ``customer``. The raw key is returned once and never stored."""
    raw_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    api_key = ApiKey.objects.create(customer=customer, name=name, prefix=raw_key[:10], key_hash=api_key_hash(raw_key))
    return api_key, raw_key


def api_key_mark_used(*, api_key: ApiKey) -> None:
    """Record use, at most once a minute per key so reads stay reads."""
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now


def api_key_revoke(*, api_key: ApiKey) -> None:
    ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
