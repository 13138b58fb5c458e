"""Start-up checks that every configured service answers.

Each failure names the environment variable behind it, in one line, so
``make run`` (and the containers) stop with a message a person can act on.
"""

from __future__ import annotations

import os

from django.conf import settings
from django.core.cache import caches
from django.db import connections
from django.db.utils import Error as DatabaseError
from kombu import Connection
from kombu.exceptions import KombuError
from redis.exceptions import RedisError

from arbitrage.env import ConfigError, redact_url

BROKER_TIMEOUT_SECONDS = 5


def check_database() -> None:
    try:
        connections["default"].ensure_connection()
    except DatabaseError as exc:
        where = redact_url(settings.DATABASE_URL) if settings.DATABASE_URL else "the embedded SQLite file"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError("DATABASE_URL", f"cannot connect to {where}: {reason}") from None


def check_broker() -> None:
    url = settings.CELERY_BROKER_URL
    try:
        with Connection(
            url, transport=settings.CELERY_BROKER_TRANSPORT, transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS
        ) as conn:
            conn.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_SECONDS)
    except (KombuError, OSError) as exc:
        variable = "CELERY_BROKER_URL" if os.environ.get("CELERY_BROKER_URL") else "REDIS_URL"
        raise ConfigError(variable, f"cannot connect to the broker at {redact_url(url)}: {exc}") from None


def check_routing_kv() -> None:
    try:
        kv = caches["routing"]
        kv.set("preflight", "ok", timeout=5)
        kv.get("preflight")
    except (RedisError, OSError) as exc:
        variable = "REDIS_URL" if settings.REDIS_URL else "ARBITRAGE_VAR_DIR"
        raise ConfigError(variable, f"routing KV does not answer: {exc}") from None


def check_services() -> None:
    """Raise ``ConfigError`` for the first configured service that does not answer."""
    check_database()
    check_broker()
    check_routing_kv()
