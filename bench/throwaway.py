"""A throwaway database for a benchmark: a temporary SQLite file, or a database
beside DATABASE_URL's on PostgreSQL. Point the settings at it, migrate, and
hand back a clean-up that drops it again."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent


def _postgres(admin_url: str, statement: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(statement)


def throwaway_database(name: str, *, env: dict[str, str] | None = None) -> tuple[str, Callable[[], None]]:
    """Set up Django on a fresh database named after ``name``; (description, clean-up)."""
    var_dir = tempfile.TemporaryDirectory(prefix=f"{name}-bench-")
    os.environ.update(
        {"ARBITRAGE_VAR_DIR": var_dir.name, "DJANGO_SETTINGS_MODULE": "arbitrage.settings", **(env or {})}
    )
    url = os.environ.get("DATABASE_URL", "")
    drop = None
    if url.startswith(("postgres://", "postgresql://", "pgsql://")):
        parts = urlsplit(url)
        database = f"{parts.path.lstrip('/') or 'postgres'}_{name}_bench"
        # FORCE: a run killed before its clean-up may have left a session on it.
        _postgres(url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        _postgres(url, f'CREATE DATABASE "{database}"')
        os.environ["DATABASE_URL"] = urlunsplit(parts._replace(path=f"/{database}"))
        description = f"PostgreSQL (throwaway database {database})"

        def drop() -> None:
            _postgres(url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    else:
        os.environ.pop("DATABASE_URL", None)
        description = f"SQLite (throwaway file under {var_dir.name})"

    sys.path.insert(0, str(ROOT))
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", interactive=False, verbosity=0)

    def cleanup() -> None:
        from django.db import connections

        connections.close_all()
        if drop is not None:
            drop()
        var_dir.cleanup()

    return description, cleanup
