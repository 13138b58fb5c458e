"""Who may reach a workload's endpoint, and what of the request the instance may see.

A public workload (the default) admits everyone. A private one admits a request
carrying, as ``Authorization: Bearer <credential>`` or ``X-Workload-Token:
<credential>``, either the owning customer's API key or the workload's access
token (``wac_...``).

Whatever the workload's access mode, no credential of ours reaches an instance:
``X-Workload-Token`` is always taken off, and so is ``Authorization`` when it
carries one of our credentials (an API key, an access token, an agent token) or
was the credential that admitted the request. A workload's own authorization
header (say, a JWT of its own app) is forwarded untouched.

The agent's control endpoints (``/_agent/...``: fail the health check, take a
checkpoint now) are for the control plane, which calls the instance's address
directly; through the gateway they are not there (404).

A key checked against the database is trusted for ``KEY_CACHE_SECONDS``, but
only while the routing KV's revocation marker stays what it was when the key
was checked: a revocation changes the marker (``accounts.services.api_key_revoke``)
and every gateway process sees the change within ``REVOCATION_CHECK_SECONDS``.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from urllib.parse import unquote
from uuid import UUID

from asgiref.sync import sync_to_async
from django.db import close_old_connections

from accounts.selectors import api_key_get_active, api_key_hash, api_key_revocations_marker
from accounts.services import API_KEY_PREFIX
from accounts.tokens import ACCESS_PREFIX, access_token_workload_id
from accounts.tokens import PREFIX as AGENT_PREFIX
from gateway.resolver import WorkloadMeta

TOKEN_HEADER = b"x-workload-token"
AUTHORIZATION = b"authorization"
# Every credential this service issues starts with one of these.
OUR_PREFIXES = (API_KEY_PREFIX, ACCESS_PREFIX, AGENT_PREFIX)
# A key checked against the database is trusted at most this long, and only while no key was revoked since.
KEY_CACHE_SECONDS = 10.0
# How often a gateway process reads the revocation marker from the routing KV.
REVOCATION_CHECK_SECONDS = 0.2
# The first path segment the sample agent keeps for the control plane.
AGENT_ONLY_SEGMENT = "_agent"
_TOKEN_SEPARATORS = re.compile(r"[\s,;=\"']+")


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


def carries_our_credential(value: bytes) -> bool:
    """Whether an ``Authorization`` value holds a credential of ours, in any scheme (Basic decoded)."""
    text = value.decode("latin-1").strip()
    words = [word for word in _TOKEN_SEPARATORS.split(text) if word]
    if len(words) >= 2 and words[0].lower() == "basic":
        try:
            decoded = base64.b64decode(text.split(None, 1)[1].strip(), validate=True).decode("latin-1")
        except (binascii.Error, ValueError):
            decoded = ""
        words.extend(decoded.split(":", 1))
    return any(word.startswith(OUR_PREFIXES) for word in words)


def without_credentials(
    headers: list[tuple[bytes, bytes]], *, admitted_by: bytes | None = None
) -> list[tuple[bytes, bytes]]:
    """The request's headers with every credential of ours taken off (``admitted_by``: the header that admitted it)."""
    return [
        (name, value)
        for name, value in headers
        if name != TOKEN_HEADER
        and not (name == AUTHORIZATION and (name == admitted_by or carries_our_credential(value)))
    ]


def agent_only_path(raw_path: bytes) -> bool:
    """Whether a request path names the agent's control endpoints, however it is spelled.

    Percent-escapes are undone (repeatedly), backslashes count as slashes, empty and
    ``.`` segments are dropped, ``..`` goes up and ``;params`` are ignored, as a
    lenient server would read the path.
    """
    path = raw_path.decode("latin-1")
    for _ in range(4):
        decoded = unquote(path, encoding="latin-1")
        if decoded == path:
            break
        path = decoded
    segments: list[str] = []
    for segment in path.replace("\\", "/").split("/"):
        segment = segment.split(";", 1)[0].strip()
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    return bool(segments) and segments[0].lower() == AGENT_ONLY_SEGMENT


def _key_customer(raw_key: str) -> int | None:
    close_old_connections()
    try:
        key = api_key_get_active(raw_key=raw_key)
    finally:
        close_old_connections()
    return key.customer_id if key is not None else None


class AccessControl:
    def __init__(self) -> None:
        # digest -> (checked at, the revocation marker then, the key's customer or None)
        self._keys: dict[str, tuple[float, str | None, int | None]] = {}
        self._key_customer = sync_to_async(_key_customer, thread_sensitive=True)
        self._marker_read = sync_to_async(api_key_revocations_marker, thread_sensitive=False)
        self._marker: str | None = None
        self._marker_read_at = float("-inf")

    async def admits(self, *, workload_id: UUID, meta: WorkloadMeta, credential: str | None) -> bool:
        if not meta.private:
            return True
        if not credential:
            return False
        if credential.startswith(ACCESS_PREFIX):
            return access_token_workload_id(credential) == workload_id
        return await self._customer_of_key(credential) == meta.customer_id

    async def revocation_marker(self) -> str | None:
        """The routing KV's revocation marker, read at most ``REVOCATION_CHECK_SECONDS`` ago."""
        if time.monotonic() - self._marker_read_at >= REVOCATION_CHECK_SECONDS:
            self._marker = await self._marker_read()
            self._marker_read_at = time.monotonic()
        return self._marker

    async def _customer_of_key(self, raw_key: str) -> int | None:
        digest = api_key_hash(raw_key)
        # Read before the database: a revocation committed after the key's check changes it afterwards.
        marker = await self.revocation_marker()
        cached = self._keys.get(digest)
        if cached is not None and cached[1] == marker and time.monotonic() - cached[0] < KEY_CACHE_SECONDS:
            return cached[2]
        customer_id = await self._key_customer(raw_key)
        if len(self._keys) > 10_000:
            self._keys.clear()
        self._keys[digest] = (time.monotonic(), marker, customer_id)
        return customer_id
