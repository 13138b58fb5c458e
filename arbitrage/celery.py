"""The Celery app: configured from Django settings (the ``CELERY_`` names).

Workers and beat log through ``settings.LOGGING`` like the web process (Celery
does not take over the root logger: a ``setup_logging`` receiver exists), so
``LOG_FORMAT`` and ``LOG_LEVEL`` rule them too. A task that takes a
``workload_id`` or ``run_id`` argument logs with them in its log context
(``arbitrage.logs``); the step engine adds the workload, step and kind.
"""

from __future__ import annotations

import inspect
import logging.config
import os
from typing import Any

from celery import Celery
from celery.signals import setup_logging, task_postrun, task_prerun

from arbitrage.logs import Saved, log_context_push, log_context_restore

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arbitrage.settings")

app = Celery("arbitrage")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

#: Task arguments that go into the log context, by parameter name.
CONTEXT_ARGUMENTS = ("workload_id", "run_id")


@setup_logging.connect
def configure_logging(**kwargs: Any) -> None:
    """Log like the web process (``settings.LOGGING``), not with Celery's own handler."""
    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)


_signatures: dict[str, inspect.Signature | None] = {}
_saved: dict[str, Saved] = {}


def task_log_fields(task: Any, args: tuple | list | None, kwargs: dict | None) -> dict[str, str]:
    """The log-context fields named by a task call's ``workload_id`` / ``run_id`` arguments."""
    name = getattr(task, "name", None) or repr(task)
    if name not in _signatures:
        try:
            _signatures[name] = inspect.signature(task.run)
        except (TypeError, ValueError, AttributeError):
            _signatures[name] = None
    signature = _signatures[name]
    if signature is None or not any(argument in signature.parameters for argument in CONTEXT_ARGUMENTS):
        return {}
    try:
        bound = signature.bind_partial(*(args or ()), **(kwargs or {}))
    except TypeError:
        return {}
    return {key: str(bound.arguments[key]) for key in CONTEXT_ARGUMENTS if bound.arguments.get(key) is not None}


@task_prerun.connect
def retire_old_connections(sender: Any = None, **_: Any) -> None:
    """Drop a database connection that is broken or older than ``CONN_MAX_AGE`` before a task uses it.

    Workers keep their connection across tasks (``CELERY_DB_REUSE_MAX``), as the web keeps one
    across requests, and Django's request-start check is done here. Not for a task applied in the
    caller's process (``apply()``): the connection, and its transaction, are the caller's.
    """
    if getattr(getattr(sender, "request", None), "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()


@task_prerun.connect
def bind_task_log_context(task_id: str | None = None, task: Any = None, args=None, kwargs=None, **_: Any) -> None:
    fields = task_log_fields(task, args, kwargs)
    if fields and task_id is not None:
        _saved[task_id] = log_context_push(**fields)


@task_postrun.connect
def unbind_task_log_context(task_id: str | None = None, **_: Any) -> None:
    saved = _saved.pop(task_id, None) if task_id is not None else None
    if saved is not None:
        log_context_restore(saved)
