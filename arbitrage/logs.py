"""Structured logs: every line about a workload names the workload and its workflow run.

The step engine (``workloads.workflows.engine``) sets the *log context* while it
executes a step (``workload_id``, ``run_id``, ``step``, ``kind``), and Celery tasks
that take a ``workload_id`` or ``run_id`` argument set it for the task's duration
(``arbitrage.celery``). ``LogContextFilter``, on the handler, copies the context
onto every record handled; the formatters write it out:

* ``LOG_FORMAT=json``: one JSON object per line with ``time``, ``level``,
  ``logger``, ``message``, ``workload_id``, ``run_id``, ``step``, ``kind`` (null
  when unset) and ``exc_info`` (the traceback text) when there is one;
* ``LOG_FORMAT=text``: ``%(asctime)s %(levelname)s %(name)s %(message)s`` with
  `` workload=<id> run=<id>`` appended when they are set.

A record logged with ``extra={"workload_id": ...}`` keeps its own values.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

FIELDS = ("workload_id", "run_id", "step", "kind")
_VARS: dict[str, ContextVar[str | None]] = {name: ContextVar(f"log_{name}", default=None) for name in FIELDS}

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

Saved = dict[str, str | None]


# --- the context ---------------------------------------------------------------------


def log_context_get() -> dict[str, str | None]:
    """The current context: every field, ``None`` when unset."""
    return {name: var.get() for name, var in _VARS.items()}


def log_context_bind(**fields: Any) -> None:
    """Set fields of the context (``None`` clears one); undone by the enclosing ``log_context``."""
    for name, value in fields.items():
        if name not in _VARS:
            raise TypeError(f"unknown log context field {name!r}; expected one of {', '.join(FIELDS)}")
        _VARS[name].set(None if value is None else str(value))


def log_context_push(**fields: Any) -> Saved:
    """Set fields and return what the whole context was, for ``log_context_restore``."""
    saved = log_context_get()
    log_context_bind(**fields)
    return saved


def log_context_restore(saved: Saved) -> None:
    """Put every field back as ``log_context_push`` found it (also those bound since)."""
    for name, value in saved.items():
        _VARS[name].set(value)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Within the block, log records carry ``fields``; on exit the whole context is as it was."""
    saved = log_context_push(**fields)
    try:
        yield
    finally:
        log_context_restore(saved)


# --- logging's side ------------------------------------------------------------------


class LogContextFilter(logging.Filter):
    """Copies the log context onto each record (put it on the handler: it then sees every logger's records)."""

    def filter(self, record: logging.LogRecord) -> bool:
        _fill(record)
        return True


def _fill(record: logging.LogRecord) -> None:
    for name, var in _VARS.items():
        if getattr(record, name, None) is None:
            setattr(record, name, var.get())


class TextFormatter(logging.Formatter):
    """The plain format, with `` workload=<id> run=<id>`` on the message line when they are set."""

    def __init__(self, fmt: str | None = None, datefmt: str | None = None, **kwargs: Any) -> None:
        super().__init__(fmt or TEXT_FORMAT, datefmt, **kwargs)

    def formatMessage(self, record: logging.LogRecord) -> str:
        _fill(record)
        line = super().formatMessage(record)
        if record.workload_id:
            line += f" workload={record.workload_id}"
        if record.run_id:
            line += f" run={record.run_id}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        _fill(record)
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **{name: getattr(record, name) for name in FIELDS},
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configured_formatter() -> logging.Formatter:
    """The formatter ``settings.LOG_FORMAT`` names (the LOGGING setting's factory)."""
    from django.conf import settings

    return JsonFormatter() if getattr(settings, "LOG_FORMAT", "text") == "json" else TextFormatter()
