"""``arb logs`` and ``arb launch`` following the logs, against the logs endpoint (GET /api/v1/workloads/{id}/logs).

These run against the real endpoint: the web (live_server) and a worker on the local cloud,
whose instances are the sample agent (it prints "workload agent <instance> listening on ...").
"""

from __future__ import annotations

import json
import threading

import pytest

from arbitrage_client import OPERATIONS, Client
from tests.client.test_cli import SPEC, arb, status_of
from tests.client.test_schema_drift import LOGS, operation_drift, schema  # noqa: F401  (the fixture)
from tests.factories import customer_with_key
from tests.live import wait_until
from workloads.recovery import health_sweep_run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("name", sorted(LOGS))
def test_the_logs_calls_are_in_the_schema_with_the_fields_they_send_and_read(schema, name):  # noqa: F811
    assert operation_drift(schema, OPERATIONS[name]) == []


def json_lines(url: str, key: str, workload_id: str) -> list[dict]:
    result = arb(url, key, "logs", workload_id, "--json")
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def launched(url: str, key: str, tmp_path) -> str:
    spec = tmp_path / "web.yaml"
    spec.write_text(SPEC.replace("recovery: terminate", "recovery: migrate"))
    result = arb(url, key, "launch", str(spec), "--detach", "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)["id"]


def running(url: str, key: str, workload_id: str, *, not_on: str | None = None) -> dict:
    def check():
        row = status_of(url, key, workload_id)
        assert row["status"] != "FAILED", row
        return row["status"] == "RUNNING" and row["instance_id"] != not_on and row

    return wait_until(check, timeout=120, what="the workload RUNNING")


def test_logs_of_a_workload_across_a_migration_are_one_stream_with_a_marker(
    catalog, worker, live_server, local_cloud_clean, tmp_path, settings
):
    settings.HEALTH_CHECK_TIMEOUT_SECONDS = 1
    _, key = customer_with_key()
    workload_id = launched(live_server.url, key, tmp_path)
    first = running(live_server.url, key, workload_id)
    wait_until(
        lambda: any(first["instance_id"] in line["text"] for line in json_lines(live_server.url, key, workload_id)),
        what="the first instance's output in arb logs",
    )

    local_cloud_clean.interrupt(first["instance_id"])  # the cloud reclaims the instance
    assert health_sweep_run().interrupted == 1
    second = running(live_server.url, key, workload_id, not_on=first["instance_id"])

    lines = wait_until(
        lambda: (
            (got := json_lines(live_server.url, key, workload_id))
            and any(second["instance_id"] in line["text"] for line in got)
            and got
        ),
        what="the second instance's output in arb logs",
    )
    positions = [line["position"] for line in lines]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    [marker] = [line for line in lines if line["stream"] == "marker"]
    before = [line for line in lines if line["position"] < marker["position"] and line["stream"] == "output"]
    after = [line for line in lines if line["position"] > marker["position"] and line["stream"] == "output"]
    assert {line["instance_id"] for line in before} == {first["instance_id"]}
    assert second["instance_id"] in {line["instance_id"] for line in after}
    assert first["provider"] in marker["text"] and second["provider"] in marker["text"]

    text = arb(live_server.url, key, "logs", workload_id)
    assert text.exit_code == 0
    assert f"── {marker['text']} ──" in text.stdout.splitlines()


def test_launch_watches_the_states_then_follows_the_logs_until_the_workload_ends(
    catalog, worker, live_server, tmp_path
):
    _, key = customer_with_key()
    spec = tmp_path / "web.yaml"
    spec.write_text(SPEC)
    client = Client(live_server.url, key)

    def terminate_once_it_runs_and_its_output_is_in():
        workload = wait_until(lambda: client.list(), what="the launched workload")[0]
        wait_until(lambda: client.get(workload["id"])["status"] == "RUNNING", timeout=120, what="RUNNING")
        wait_until(
            lambda: any("listening on" in line["text"] for line in client.log_lines(workload["id"])),
            timeout=120,
            what="its first output line",
        )
        client.terminate(workload["id"])

    stopper = threading.Thread(target=terminate_once_it_runs_and_its_output_is_in, daemon=True)
    stopper.start()
    result = arb(live_server.url, key, "launch", str(spec), "--timeout", "120")
    stopper.join(timeout=10)

    assert result.exit_code == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[0].startswith("Launched cli-web: ")
    assert any(line.split()[1:2] == ["RUNNING"] for line in out)  # "  10:02:14  RUNNING  aws us-east-1 ..."
    assert any("workload agent" in line and "listening on" in line for line in out)
    assert out[-1].startswith("cli-web ended TERMINATED: ")


def test_follow_stops_at_the_end_of_an_ended_workload(catalog, worker, live_server, tmp_path):
    _, key = customer_with_key()
    workload_id = launched(live_server.url, key, tmp_path)
    running(live_server.url, key, workload_id)
    assert arb(live_server.url, key, "down", "--wait", workload_id).exit_code == 0

    result = arb(live_server.url, key, "logs", "-f", workload_id)

    assert result.exit_code == 0, result.stderr
    assert "listening on" in result.stdout
