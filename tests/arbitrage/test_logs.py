"""Structured logs: lines logged inside a workflow step or a task name the workload and the run."""

from __future__ import annotations

import io
import json
import logging
import logging.config

import pytest
from celery import shared_task

from arbitrage.logs import JsonFormatter, LogContextFilter, TextFormatter, configured_formatter, log_context
from tests.factories import WorkloadFactory
from workloads.workflows import engine
from workloads.workflows.engine import Step, Workflow

step_logger = logging.getLogger("tests.arbitrage.steps")


def logs_inside(ctx):
    step_logger.info("checking %s", "capacity")
    return {"ok": True}


def fails_inside(ctx):
    try:
        raise ValueError("no such pool")
    except ValueError:
        step_logger.exception("the pool vanished")
    raise engine.StepFailed("gave up")


engine.register(Workflow(kind="log-flow", steps=(Step("logs-inside", logs_inside), Step("fails-inside", fails_inside))))


@shared_task(name="tests.arbitrage.task_with_workload")
def task_with_workload(workload_id: str, note: str = "") -> None:
    step_logger.info("task for %s", workload_id)


def capture(formatter: logging.Formatter) -> io.StringIO:
    """Lines ``step_logger`` writes through a handler set up like settings.LOGGING's."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(LogContextFilter())
    step_logger.handlers = [handler]
    step_logger.setLevel(logging.INFO)
    step_logger.propagate = False
    return stream


@pytest.fixture(autouse=True)
def quiet_step_logger():
    yield
    step_logger.handlers = []
    step_logger.propagate = True


@pytest.fixture
def run(db, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        return engine.workflow_run_create(kind="log-flow", workload=WorkloadFactory())


def execute(run, name):
    return engine.workflow_step_execute(run_id=run.id, step_name=name, generation=run.chain_generation)


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_a_line_logged_inside_a_step_is_json_with_the_workload_run_and_step(run):
    stream = capture(JsonFormatter())

    execute(run, "logs-inside")
    step_logger.info("after the step")

    inside, after = (json.loads(line) for line in lines(stream))
    assert inside["message"] == "checking capacity"
    assert inside["level"] == "INFO" and inside["logger"] == "tests.arbitrage.steps"
    assert inside["workload_id"] == str(run.workload_id)
    assert inside["run_id"] == str(run.id)
    assert inside["step"] == "logs-inside" and inside["kind"] == "log-flow"
    assert inside["time"].endswith("+00:00")
    assert "exc_info" not in inside
    assert after["workload_id"] is None and after["run_id"] is None and after["step"] is None


def test_an_exception_logged_inside_a_step_carries_its_traceback_and_the_engines_own_lines_the_ids(run):
    stream = capture(JsonFormatter())
    engine_logger = logging.getLogger("workloads.workflows.engine")
    engine_logger.addHandler(step_logger.handlers[0])
    try:
        execute(run, "fails-inside")
    finally:
        engine_logger.removeHandler(step_logger.handlers[0])

    logged, gave_up = (json.loads(line) for line in lines(stream))
    assert logged["message"] == "the pool vanished" and logged["level"] == "ERROR"
    assert "ValueError: no such pool" in logged["exc_info"]
    assert logged["workload_id"] == str(run.workload_id) and logged["run_id"] == str(run.id)
    assert gave_up["logger"] == "workloads.workflows.engine" and "gave up" in gave_up["message"]
    assert gave_up["workload_id"] == str(run.workload_id) and gave_up["step"] == "fails-inside"


def test_the_text_format_appends_the_workload_and_the_run(run):
    stream = capture(TextFormatter())

    execute(run, "logs-inside")
    step_logger.info("after the step")

    inside, after = lines(stream)
    assert inside.endswith(f" INFO tests.arbitrage.steps checking capacity workload={run.workload_id} run={run.id}")
    assert after.endswith(" INFO tests.arbitrage.steps after the step")


def test_a_records_own_extra_wins_and_the_context_nests():
    stream = capture(JsonFormatter())
    with log_context(workload_id="w-outer"):
        with log_context(run_id="r-inner"):
            step_logger.info("nested")
        step_logger.info("own", extra={"workload_id": "w-extra"})
        step_logger.info("outer")

    nested, own, outer = (json.loads(line) for line in lines(stream))
    assert (nested["workload_id"], nested["run_id"]) == ("w-outer", "r-inner")
    assert own["workload_id"] == "w-extra"
    assert (outer["workload_id"], outer["run_id"]) == ("w-outer", None)


def test_a_celery_task_that_takes_a_workload_id_logs_with_it():
    stream = capture(JsonFormatter())

    task_with_workload.apply(args=("w-42",), kwargs={"note": "x"})
    step_logger.info("after the task")

    during, after = (json.loads(line) for line in lines(stream))
    assert during["workload_id"] == "w-42"
    assert after["workload_id"] is None


def test_log_format_picks_the_formatter_and_celery_logs_through_settings_logging(settings):
    from arbitrage.celery import configure_logging

    settings.LOG_FORMAT = "json"
    assert isinstance(configured_formatter(), JsonFormatter)
    settings.LOG_FORMAT = "text"
    assert isinstance(configured_formatter(), TextFormatter)

    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    try:
        settings.LOG_FORMAT = "json"
        configure_logging(loglevel=logging.DEBUG)  # what a worker does on start (setup_logging signal)
        (handler,) = root.handlers
        assert isinstance(handler.formatter, JsonFormatter)
        assert any(isinstance(f, LogContextFilter) for f in handler.filters)
    finally:
        settings.LOG_FORMAT = "text"
        logging.config.dictConfig(settings.LOGGING)
        root.handlers, root.level = before
