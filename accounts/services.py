"""Writes for customers and their API keys."""

from __future__ import annotations

import logging
import secrets
import uuid
from datetime import timedelta

from django.core.cache import caches
from django.db import transaction
from django.utils import timezone

from accounts.models import ApiKey, Customer
from accounts.selectors import API_KEY_REVOCATIONS_KV_KEY, api_key_hash

logger = logging.getLogger(__name__)

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


def api_key_revoke(*, api_key: ApiKey) -> bool:
    """Revoke ``api_key`` for good; False when it was revoked already.

    The API checks keys against the database on every request, so it refuses the
    key at once. Processes that trust a key for a while (the gateway) are told
    through the routing KV once the revocation has committed, and refuse it
    within a second.
    """
    with transaction.atomic():
        row = ApiKey.objects.select_for_update().get(pk=api_key.pk)
        if row.revoked_at is not None:
            api_key.revoked_at = row.revoked_at
            return False
        row.revoked_at = timezone.now()
        row.save(update_fields=["revoked_at"])
        transaction.on_commit(api_key_revocation_publish, robust=True)
    api_key.revoked_at = row.revoked_at
    return True


def api_key_revocation_publish() -> None:
    """Change the routing KV's revocation marker: every gateway process drops the keys it trusts."""
    caches["routing"].set(API_KEY_REVOCATIONS_KV_KEY, uuid.uuid4().hex, timeout=None)
    logger.info("api key revoked: revocation marker changed in the routing KV")
