"""Reads for customers and their API keys."""

from __future__ import annotations

import hashlib

from django.core.cache import caches

from accounts.models import ApiKey

# In the routing KV: a value that changes on every revocation of a key (accounts.services.api_key_revoke).
# A process that trusts keys it checked earlier (the gateway) re-checks them once it has changed.
API_KEY_REVOCATIONS_KV_KEY = "accounts:api_keys:revocations"


def api_key_hash(raw_key: str) -> str:
    # Keys are 256-bit random tokens, so a plain SHA-256 is enough to make the
    # stored hash useless to an attacker; no slow KDF needed on every request.
    return hashlib.sha256(raw_key.encode()).hexdigest()


def api_key_get_active(*, raw_key: str) -> ApiKey | None:
    """The unrevoked key matching ``raw_key``, with its customer, or None."""
    return (
        ApiKey.objects.select_related("customer")
        .filter(key_hash=api_key_hash(raw_key), revoked_at__isnull=True)
        .first()
    )


def api_key_revocations_marker() -> str | None:
    """The routing KV's revocation marker: different after every revocation (None before the first)."""
    return caches["routing"].get(API_KEY_REVOCATIONS_KV_KEY)
