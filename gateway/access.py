"""Who may reach a private workload's endpoint.

A public workload (the default) admits everyone. A private one admits a request
carrying, as ``Authorization: Bearer <credential>`` or ``X-Workload-Token:
<credential>``, either the owning customer's API key or the workload's access
token (``wac_...``). The credential is taken off the request before it is
proxied, so the instance never sees it.
"""

from __future__ import annotations

import time
from uuid import UUID

from asgiref.sync import sync_to_async
from django.db import close_old_connections

from accounts.selectors import api_key_get_active, api_key_hash
from accounts.tokens import ACCESS_PREFIX, access_token_workload_id
from gateway.resolver import WorkloadMeta

TOKEN_HEADER = b"x-workload-token"
AUTHORIZATION = b"authorization"
# A key checked against the database is trusted this long (a revoked key stops working within it).
KEY_CACHE_SECONDS = 10.0


def credential_of(headers: list[tuple[bytes, bytes]]) -> tuple[bytes | None, str | None]:
    """(the header carrying a gateway credential, the credential) of a request."""
    for name, value in headers:
        if name == TOKEN_HEADER:
            return name, value.decode("latin-1").strip()
    for name, value in headers:
        if name == AUTHORIZATION:
            scheme, _, credential = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and credential.strip():
                return name, credential.strip()
    return None, None


def _key_customer(raw_key: str) -> int | None:
    close_old_connections()
    try:
        key = api_key_get_active(raw_key=raw_key)
    finally:
        close_old_connections()
    return key.customer_id if key is not None else None


class AccessControl:
    def __init__(self) -> None:
        self._keys: dict[str, tuple[float, int | None]] = {}
        self._key_customer = sync_to_async(_key_customer, thread_sensitive=True)

    async def admits(self, *, workload_id: UUID, meta: WorkloadMeta, credential: str | None) -> bool:
        if not meta.private:
            return True
        if not credential:
            return False
        if credential.startswith(ACCESS_PREFIX):
            return access_token_workload_id(credential) == workload_id
        return await self._customer_of_key(credential) == meta.customer_id

    async def _customer_of_key(self, raw_key: str) -> int | None:
        digest = api_key_hash(raw_key)
        cached = self._keys.get(digest)
        if cached is not None and time.monotonic() - cached[0] < KEY_CACHE_SECONDS:
            return cached[1]
        customer_id = await self._key_customer(raw_key)
        if len(self._keys) > 10_000:
            self._keys.clear()
        self._keys[digest] = (time.monotonic(), customer_id)
        return customer_id
