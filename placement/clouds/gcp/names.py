"""Names as Compute Engine spells them: instances, zones, insert request ids and labels."""

from __future__ import annotations

import re
import uuid
from datetime import datetime

# Instance names: RFC 1035 labels, as Compute Engine requires.
INSTANCE_NAME = re.compile(r"^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$")
ZONE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z0-9]+$")
# The insert's requestId is uuid5(this, token): the same token always sends the same request id.
_REQUEST_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://compute-arbitrage/gcp/instances.insert")
_LABEL_INVALID = re.compile(r"[^a-z0-9_-]")
_LABEL_MAX = 63


def instance_name(token: str) -> str:
    """The instance's name: the idempotency token itself when it is a valid name (``ca-<32 hex>`` is)."""
    if INSTANCE_NAME.match(token):
        return token
    return "ca-" + uuid.uuid5(_REQUEST_ID_NAMESPACE, token).hex


def request_id(token: str) -> str:
    """The insert's ``requestId``: a UUID, the same for every retry of one token."""
    return str(uuid.uuid5(_REQUEST_ID_NAMESPACE, token))


def label(text: str, *, key: bool = False) -> str:
    """A GCP label key or value: lowercase letters, digits, ``_`` and ``-``, at most 63 characters."""
    text = _LABEL_INVALID.sub("-", text.lower())
    if key and not text[:1].isalpha():
        text = "k-" + text
    return text[:_LABEL_MAX]


def region_of(zone: str) -> str:
    return zone.rsplit("-", 1)[0]


def last_segment(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def parse_timestamp(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None
