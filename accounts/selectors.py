"""Reads for customers and their API keys."""

from __future__ import annotations

import hashlib

from accounts.models import ApiKey


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
