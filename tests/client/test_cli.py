"""The arb command line against the real service: the web (live_server) and a Celery worker on the local cloud."""

from __future__ import annotations

import json
import socket
from decimal import Decimal

import pytest
from click.testing import CliRunner, Result

from arbitrage_client.cli import main
from tests.factories import customer_with_key
from tests.live import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

SPEC = """\
name: cli-web
requirements:
  vcpu: 2
  memory_gb: 4
recovery: terminate
"""


def arb(url: str, key: str, *args: str) -> Result:
    env = {"ARBITRAGE_API_URL": url, "ARBITRAGE_API_KEY": key, "COLUMNS": "200"}
    return CliRunner().invoke(main, list(args), env=env)


def status_of(url: str, key: str, workload_id: str) -> dict:
    result = arb(url, key, "status", "--all", "--json")
    assert result.exit_code == 0, result.stderr
    return next(row for row in json.loads(result.stdout) if row["id"] == workload_id)


def test_launch_status_cost_and_down_against_the_service(catalog, worker, live_server, tmp_path):
    _, key = customer_with_key()
    spec = tmp_path / "web.yaml"
    spec.write_text(SPEC)

    launched = arb(live_server.url, key, "launch", str(spec), "--detach", "--json")
    assert launched.exit_code == 0, launched.stderr
    workload_id = json.loads(launched.stdout)["id"]

    row = wait_until(
        lambda: (r := status_of(live_server.url, key, workload_id))["status"] in ("RUNNING", "FAILED") and r,
        timeout=90,
        what="the workload RUNNING in arb status",
    )
    assert row["status"] == "RUNNING"
    assert row["provider"] in ("aws", "gcp", "azure") and row["region"]
    assert row["market"] == "spot" and Decimal(row["price_per_hour"]) > 0
    assert row["on_track"] is None  # no deadline

    table = arb(live_server.url, key, "status")
    assert table.exit_code == 0
    assert "cli-web" in table.stdout and "RUNNING" in table.stdout and workload_id[:8] in table.stdout

    cost = arb(live_server.url, key, "cost", "--json")
    assert cost.exit_code == 0, cost.stderr
    [mine] = [w for w in json.loads(cost.stdout)["workloads"] if w["id"] == workload_id]
    assert Decimal(mine["spend"]) > 0 and Decimal(mine["on_demand_equivalent"]) > Decimal(mine["spend"])
    assert "by workload" in arb(live_server.url, key, "cost").stdout

    down = arb(live_server.url, key, "down", "cli-web")  # by its name
    assert down.exit_code == 0, down.stderr
    assert down.stdout == f"{workload_id} cli-web: STOPPING\n"
    wait_until(lambda: status_of(live_server.url, key, workload_id)["status"] == "TERMINATED", what="TERMINATED")
    assert arb(live_server.url, key, "status").stdout.startswith("No workloads.")

    again = arb(live_server.url, key, "down", workload_id)
    assert again.exit_code == 0 and again.stdout == f"{workload_id}: already TERMINATED\n"


def test_quote_of_a_spec_ranks_the_offers(catalog, live_server, tmp_path):
    _, key = customer_with_key()
    spec = tmp_path / "web.yaml"
    spec.write_text(SPEC)

    result = arb(live_server.url, key, "quote", str(spec), "--limit", "3", "--json")

    assert result.exit_code == 0, result.stderr
    candidates = json.loads(result.stdout)["candidates"]
    assert [c["rank"] for c in candidates] == [1, 2, 3]
    assert all(c["vcpu"] >= 2 and c["memory_gb"] >= 4 for c in candidates)
    assert candidates[0]["instance_type"] in arb(live_server.url, key, "quote", str(spec)).stdout


def test_a_spec_the_api_refuses_points_at_its_line_and_exits_2(catalog, live_server, tmp_path):
    _, key = customer_with_key()
    spec = tmp_path / "big.yaml"
    spec.write_text("name: big\nrequirements:\n  vcpu: 2\n  memory_gb: 4\n  regions: ['not a region!']\n")

    result = arb(live_server.url, key, "launch", str(spec), "--detach")

    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {spec}:5: requirements.regions")
    assert result.stderr.endswith("(refused by the API)\n") and result.stderr.count("\n") == 1


def test_a_bad_key_is_one_line_and_exit_1(live_server):
    customer_with_key()

    result = arb(live_server.url, "ca_not-a-key", "status")

    assert result.exit_code == 1
    assert result.stderr.startswith("error: the API refused the API key: ")
    assert result.stderr.endswith("(--api-key or ARBITRAGE_API_KEY)\n") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.output


def test_an_unreachable_api_is_one_line_and_exit_1():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    result = arb(url, "ca_x", "status")

    assert result.exit_code == 1
    assert result.stderr == (
        f"error: cannot reach the API at {url} (connection refused); is the service running? "
        "(--url or ARBITRAGE_API_URL)\n"
    )


def test_an_unknown_workload_is_one_line_and_exit_1(live_server):
    _, key = customer_with_key()

    result = arb(live_server.url, key, "down", "nothing-of-that-name")

    assert result.exit_code == 1
    assert result.stderr == "error: nothing-of-that-name: no workload with the name or id 'nothing-of-that-name'\n"
