"""Fixed-window counters in the Django cache alias ``throttle``, for rate limits.

The alias is Redis in services mode, so every web process on every host counts
into the same keys (INCR is atomic there); embedded it is a file cache under
``var/throttle/``, shared by the web processes of this machine. A window is a
period of the rate (``(10, 60)``: ten a minute) aligned to the epoch; its key
names the window, so a count never needs resetting and simply expires.

Used by the API's throttles (``arbitrage/api/throttling.py``) and the admin's
login (``arbitrage/admin_login.py``).
"""

from __future__ import annotations

import hashlib
import math
import time

from django.core.cache import caches
from rest_framework.throttling import BaseThrottle


def _cache():
    return caches["throttle"]


def source_address(request) -> str:
    """The caller's address: REMOTE_ADDR, or the X-Forwarded-For entry added by the trusted
    proxies (REST_FRAMEWORK NUM_PROXIES, from API_TRUSTED_PROXIES), never one the caller wrote."""
    return BaseThrottle().get_ident(request) or "unknown"


class WindowCounter:
    """``rate = (limit, seconds)``: at most ``limit`` events per ``seconds`` for each identity."""

    def __init__(self, *, scope: str, rate: tuple[int, int]) -> None:
        self.scope = scope
        self.limit, self.seconds = rate

    def _key(self, identity: str, now: float) -> str:
        digest = hashlib.sha256(identity.encode()).hexdigest()[:32]
        return f"{self.scope}:{int(now // self.seconds)}:{digest}"

    def count(self, identity: str, *, now: float | None = None) -> int:
        return int(_cache().get(self._key(identity, time.time() if now is None else now), 0))

    def hit(self, identity: str, *, now: float | None = None) -> int:
        """Count one event; the count in this window, this one included."""
        key = self._key(identity, time.time() if now is None else now)
        cache = _cache()
        if cache.add(key, 1, timeout=self.seconds + 1):
            return 1
        try:
            return int(cache.incr(key))
        except ValueError:  # expired between add and incr: a new window
            cache.set(key, 1, timeout=self.seconds + 1)
            return 1

    def retry_after(self, *, now: float | None = None) -> int:
        """Whole seconds until the present window ends (at least 1)."""
        now = time.time() if now is None else now
        return max(1, math.ceil(self.seconds - now % self.seconds))
