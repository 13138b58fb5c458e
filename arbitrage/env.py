"""Reading configuration from the environment, with one clear line per mistake.

Every setting the product reads from the environment goes through these helpers,
so a malformed value stops start-up with ``ConfigError`` naming the variable
instead of failing later with a traceback somewhere else.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit


class ConfigError(SystemExit):
    """A setting from the environment is malformed or unusable.

    It is a ``SystemExit`` on purpose: uncaught, Python prints its one-line
    message to stderr and exits with status 1, whichever entry point (manage.py,
    celery, gunicorn) was loading the settings, and no traceback is shown.
    """

    def __init__(self, variable: str, problem: str) -> None:
        self.variable = variable
        self.problem = problem
        super().__init__(f"configuration error: {variable}: {problem}")

    def __str__(self) -> str:
        return str(self.code)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(name, f"expected true/false, got {raw!r}")


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(name, f"expected an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(name, f"must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(name, f"must be at most {maximum}, got {value}")
    return value


def env_float(name: str, default: float, *, minimum: float | None = None, maximum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(name, f"expected a number, got {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(name, f"expected a finite number, got {raw!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(name, f"must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(name, f"must be at most {maximum}, got {value}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_mapping(name: str, default: dict[str, str], *, keys: set[str], values: set[str]) -> dict[str, str]:
    """``"a=x,b=y"`` into a dict over ``default``, checking keys and values."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return dict(default)
    mapping = dict(default)
    for item in raw.split(","):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or key not in keys or value not in values:
            raise ConfigError(
                name,
                f"expected comma-separated KEY=VALUE with KEY in {sorted(keys)} and VALUE in {sorted(values)}, "
                f"got {item.strip()!r}",
            )
        mapping[key] = value
    return mapping


def env_pairs(name: str) -> dict[str, str]:
    """``"key=value,key=value"`` with free-form keys (regions, zones) and non-empty values."""
    raw = os.environ.get(name, "")
    pairs: dict[str, str] = {}
    for item in raw.split(","):
        if not item.strip():
            continue
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not key or not value:
            raise ConfigError(name, f"expected comma-separated KEY=VALUE pairs, got {item.strip()!r}")
        pairs[key] = value
    return pairs


def env_url(name: str, *, schemes: set[str], default: str = "") -> str:
    """A URL whose scheme is one of ``schemes``; empty when unset and no default."""
    raw = os.environ.get(name, default).strip()
    if not raw:
        return ""
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise ConfigError(name, f"malformed URL ({exc})") from None
    if parts.scheme not in schemes:
        allowed = ", ".join(sorted(f"{s}://" for s in schemes))
        raise ConfigError(
            name, f"unsupported scheme {parts.scheme + '://' if parts.scheme else 'missing'}; expected one of {allowed}"
        )
    if parts.scheme not in {"filesystem", "sqlite", "memory"} and not parts.hostname:
        raise ConfigError(name, "malformed URL: no host")
    return raw


def redact_url(url: str) -> str:
    """The URL with any password replaced, safe to print."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        parts = parts._replace(netloc=netloc)
    return parts.geturl()


_RATE_PERIODS = {
    **dict.fromkeys(("s", "sec", "second"), 1),
    **dict.fromkeys(("m", "min", "minute"), 60),
    **dict.fromkeys(("h", "hour"), 3600),
    **dict.fromkeys(("d", "day"), 86400),
}


def env_rate(name: str, default: str) -> tuple[int, int]:
    """``"N/period"`` (period: second, minute, hour or day; "10/min" and "10/m" also do) as (N, seconds)."""
    raw = os.environ.get(name)
    text = default if raw is None or not raw.strip() else raw
    count, sep, period = (part.strip() for part in text.strip().lower().partition("/"))
    if not sep or not count.isascii() or not count.isdigit() or int(count) < 1 or period not in _RATE_PERIODS:
        raise ConfigError(name, f"expected a rate like 10/minute (per second, minute, hour or day), got {raw!r}")
    return int(count), _RATE_PERIODS[period]
