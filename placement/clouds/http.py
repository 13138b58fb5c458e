"""GET a JSON document from a cloud's public price API, with errors normalised.

No retries here: a refresh that fails keeps the last good prices and the next
scheduled refresh tries again, so no worker ever waits out a backoff.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import urllib3

from placement.clouds.base import PermanentCloudError, TransientCloudError

_pool = urllib3.PoolManager(retries=False, headers={"Accept": "application/json"})
MAX_BODY_BYTES = 64 * 1024 * 1024


def safe_url(url: str) -> str:
    """The URL without its query (which may carry an API key), for messages."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def get_json(
    url: str,
    *,
    provider: str,
    timeout: float,
    fields: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    try:
        response = _pool.request(
            "GET", url, fields=fields, headers=headers, timeout=urllib3.Timeout(total=timeout), preload_content=False
        )
        body = response.read(MAX_BODY_BYTES + 1)
        response.release_conn()
    except urllib3.exceptions.HTTPError as exc:
        raise TransientCloudError(f"{safe_url(url)}: {type(exc).__name__}", provider=provider) from None
    if len(body) > MAX_BODY_BYTES:
        raise PermanentCloudError(f"{safe_url(url)}: answer over {MAX_BODY_BYTES} bytes", provider=provider)
    if response.status == 429 or response.status >= 500:
        raise TransientCloudError(
            f"{safe_url(url)} answered HTTP {response.status}", provider=provider, code=str(response.status)
        )
    if response.status >= 400:
        detail = body[:300].decode("utf-8", "replace")
        raise PermanentCloudError(
            f"{safe_url(url)} answered HTTP {response.status}: {detail}", provider=provider, code=str(response.status)
        )
    try:
        document = json.loads(body)
    except ValueError:
        raise PermanentCloudError(
            f"{safe_url(url)} answered with something that is not JSON", provider=provider
        ) from None
    if not isinstance(document, dict):
        raise PermanentCloudError(f"{safe_url(url)} answered with JSON that is not an object", provider=provider)
    return document
