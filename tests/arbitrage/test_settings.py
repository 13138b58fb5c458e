"""Start-up configuration: a bad setting stops start-up with one line naming it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICE_VARIABLES = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "STORAGE_BUCKET")


def manage(*args: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    clean.update({"ARBITRAGE_VAR_DIR": str(tmp_path / "var"), "DJANGO_SETTINGS_MODULE": "arbitrage.settings", **env})
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DATABASE_URL", "mysql://root@localhost/db"),
        ("DATABASE_URL", "postgres://host:notaport/db"),
        ("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/"),
        ("DATABASE_URL", "not a url"),
        ("REDIS_URL", "http://localhost:6379"),
        ("CELERY_BROKER_URL", "kafka://localhost"),
        ("DEBUG", "maybe"),
        ("API_MAX_BODY_BYTES", "lots"),
        ("API_MAX_BODY_BYTES", "10"),
        ("SECRET_KEY", "short"),
        ("LOG_LEVEL", "LOUD"),
        ("DEFAULT_MAX_CONCURRENT_WORKLOADS", "0"),
        ("WORKLOAD_DOMAIN", "a b"),
        ("API_THROTTLE_RATE", "lots"),
        ("API_AUTH_FAILURE_RATE", "10/fortnight"),
        ("ADMIN_LOGIN_FAILURE_RATE", "0/minute"),
        ("API_TRUSTED_PROXIES", "-1"),
        ("HTTPS_ONLY", "perhaps"),
        ("SECURE_PROXY_SSL_HEADER", "X-Forwarded-Proto"),
    ],
)
def test_a_malformed_setting_stops_start_up_with_one_line_naming_it(tmp_path, variable, value):
    result = manage("check", tmp_path=tmp_path, **{variable: value})

    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"configuration error: {variable}: ")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nothing"),
        ("REDIS_URL", "redis://127.0.0.1:1/0"),
        ("CELERY_BROKER_URL", "redis://127.0.0.1:1/0"),
    ],
)
def test_an_unreachable_service_stops_start_up_with_one_line_naming_it(tmp_path, variable, value):
    migrate = manage("migrate", "-v0", tmp_path=tmp_path) if variable != "DATABASE_URL" else None
    assert migrate is None or migrate.returncode == 0, migrate.stderr

    result = manage("preflight", tmp_path=tmp_path, **{variable: value})

    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"{variable}: cannot connect" in lines[0] or f"{variable}: routing KV does not answer" in lines[0]
    assert "Traceback" not in result.stderr


def test_the_embedded_default_needs_no_configuration(tmp_path):
    result = manage("preflight", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "answer" in result.stdout
    assert (tmp_path / "var" / "db.sqlite3").exists()
    assert (tmp_path / "var" / "secret_key").exists()


def test_the_database_is_the_configured_one(db, settings):
    """Embedded: SQLite in WAL mode. Services mode: the PostgreSQL of DATABASE_URL."""
    from django.db import connection

    if not settings.DATABASE_URL:
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode")
            assert cursor.fetchone()[0] == "wal"
    else:
        assert connection.vendor == "postgresql"


def test_enabling_commands_without_a_sandbox_stops_start_up_with_one_line(tmp_path):
    bare = tmp_path / "bin"  # a PATH without bwrap
    bare.mkdir()
    done = manage("check", tmp_path=tmp_path, LOCAL_CLOUD_ALLOW_COMMANDS="1", PATH=str(bare))

    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("configuration error: LOCAL_CLOUD_ALLOW_COMMANDS: ") and "bubblewrap" in lines[0]


def test_the_embedded_secret_key_is_readable_by_the_service_alone(tmp_path):
    assert manage("check", tmp_path=tmp_path).returncode == 0

    assert (tmp_path / "var" / "secret_key").stat().st_mode & 0o777 == 0o600


HTTPS_DEPLOYMENT = {
    "DATABASE_URL": "postgres://arbitrage:secret@db.internal:5432/arbitrage",
    "REDIS_URL": "redis://cache.internal:6379/0",
    "SECRET_KEY": "k" * 30 + "-0123456789abcdefghijklmnopqrstuvwxyz",
    "ALLOWED_HOSTS": "api.arbitrage.example",
    "CSRF_TRUSTED_ORIGINS": "https://api.arbitrage.example",
    "HTTPS_ONLY": "true",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "SECURE_HSTS_PRELOAD": "true",
    "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto=https",
}


def test_the_deploy_check_is_clean_for_services_mode_behind_https(tmp_path):
    result = manage("check", "--deploy", "--fail-level", "WARNING", tmp_path=tmp_path, **HTTPS_DEPLOYMENT)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_without_the_https_settings_the_deploy_check_warns(tmp_path):
    https = {"HTTPS_ONLY", "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD", "SECURE_PROXY_SSL_HEADER"}
    plain = {name: value for name, value in HTTPS_DEPLOYMENT.items() if name not in https}
    result = manage("check", "--deploy", "--fail-level", "WARNING", tmp_path=tmp_path, **plain)

    assert result.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in result.stderr
