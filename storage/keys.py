"""Object keys: what a workload may name, and where it lives in the bucket.

A caller names keys relative to its workload (``state/config.json``); the
backend key is ``workloads/{id}/<key>``. Only the three prefixes of the source's
namespace are allowed, and nothing that could climb out of it.
"""

from __future__ import annotations

import re
from uuid import UUID

from storage.errors import InvalidKeyError

PREFIXES = ("state/", "checkpoints/", "artifacts/")
MAX_KEY_LENGTH = 512
MAX_SEGMENT_LENGTH = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def workload_prefix(workload_id: UUID | str) -> str:
    return f"workloads/{workload_id}/"


def full_key(workload_id: UUID | str, key: str) -> str:
    return workload_prefix(workload_id) + key


def key_validate(key: object) -> str:
    """The key unchanged when it is safe; ``InvalidKeyError`` naming the problem otherwise."""
    if not isinstance(key, str) or not key:
        raise InvalidKeyError("Object key must be a non-empty string.", key=key if isinstance(key, str) else None)
    if len(key) > MAX_KEY_LENGTH or len(key.encode()) > MAX_KEY_LENGTH:
        raise InvalidKeyError(f"Object key is longer than {MAX_KEY_LENGTH} bytes.")
    if _CONTROL.search(key):
        raise InvalidKeyError("Object key contains a control character.", key=key.encode("unicode_escape").decode())
    if "\\" in key:
        raise InvalidKeyError("Object key contains a backslash.", key=key)
    if key.startswith("/"):
        raise InvalidKeyError("Object key must be relative, not an absolute path.", key=key)
    segments = key.split("/")
    if any(segment in (".", "..") for segment in segments):
        raise InvalidKeyError("Object key must not contain '.' or '..' segments.", key=key)
    if any(segment == "" for segment in segments):
        raise InvalidKeyError("Object key has an empty segment ('//' or a trailing '/').", key=key)
    if any(len(segment) > MAX_SEGMENT_LENGTH for segment in segments):
        raise InvalidKeyError(f"Object key has a segment longer than {MAX_SEGMENT_LENGTH} characters.", key=key)
    if not key.startswith(PREFIXES) or len(segments) < 2:
        raise InvalidKeyError(f"Object key must start with one of {', '.join(PREFIXES)}.", key=key)
    return key
