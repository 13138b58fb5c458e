"""The demo's pure parts: tables, the live state table, the cost summary and the cross-cloud pinning.

The whole story is checked by running ``make demo`` itself.
"""

from __future__ import annotations

import io
from decimal import Decimal
from pathlib import Path

import pytest

from demo import DemoFailed
from demo.client import Answer, error_message
from demo.endpoint import EndpointCall
from demo.management.commands.demo import demo_environment
from demo.render import (
    STATE_HEADERS,
    STATE_WIDTHS,
    LiveTable,
    cost_lines,
    current_instance,
    money,
    offers_table,
    percent,
    state_row,
    table,
)
from demo.story import cross_cloud_requirements


def detail(status: str, *instances: dict) -> dict:
    return {"status": status, "instances": list(instances)}


def instance(provider: str, created: str, *, terminated: str | None = None, **fields) -> dict:
    return {
        "provider": provider,
        "region": fields.get("region", "us-west-2"),
        "instance_type": fields.get("instance_type", "t3.medium"),
        "instance_id": fields.get("instance_id", f"local-{created}"),
        "spot_price": fields.get("spot_price", "0.014560"),
        "created_at": created,
        "terminated_at": terminated,
    }


def test_a_table_lines_up_its_columns_and_shows_blanks_as_dashes():
    lines = table(("name", "state"), [("cpu-batch", "RUNNING"), ("gpu", None)])

    assert lines == ["  name       state", "  cpu-batch  RUNNING", "  gpu        -"]


def test_a_table_is_at_least_as_wide_as_asked():
    lines = table(("a", "b"), [("x", "y")], widths=(5, 3))

    assert lines[1] == "  x      y"


def test_the_current_instance_is_the_live_one_else_the_last():
    old = instance("aws", "2026-01-01T00:00:00Z", terminated="2026-01-01T00:01:00Z")
    new = instance("azure", "2026-01-01T00:01:05Z")

    assert current_instance(detail("RUNNING", new, old)) == new
    finished = dict(new, terminated_at="2026-01-01T00:02:00Z")
    assert current_instance(detail("TERMINATED", old, finished)) == finished
    assert current_instance(detail("PENDING")) is None


def test_a_state_row_says_where_the_workload_runs():
    running = detail("RUNNING", instance("aws", "2026-01-01T00:00:00Z", spot_price="0.014560"))

    assert state_row("long-job", running) == ("long-job", "RUNNING", "aws", "us-west-2", "t3.medium", "$0.0146/h")
    assert state_row("gpu", detail("PENDING")) == ("gpu", "PENDING", None, None, None, None)


def test_the_live_table_prints_only_changed_rows_when_not_a_terminal():
    out = io.StringIO()
    live = LiveTable(out, STATE_HEADERS[:2], tty=False, widths=STATE_WIDTHS[:2])

    live.update([("a", "PENDING"), ("b", "PENDING")])
    live.update([("a", "PENDING"), ("b", "PENDING")])
    live.update([("a", "PROVISIONING"), ("b", "PENDING")])
    live.update([("a", "RUNNING"), ("b", "PENDING")])

    lines = out.getvalue().splitlines()
    assert [line.split() for line in lines] == [
        ["workload", "state"],
        ["a", "PENDING"],
        ["b", "PENDING"],
        ["a", "PROVISIONING"],
        ["a", "RUNNING"],
    ]
    assert "\x1b" not in out.getvalue()


def test_the_live_table_redraws_in_place_on_a_terminal():
    out = io.StringIO()
    live = LiveTable(out, ("workload", "state"), tty=True)

    live.update([("a", "PENDING")])
    first = out.getvalue()
    live.update([("a", "RUNNING")])
    second = out.getvalue()[len(first) :]

    assert not first.startswith("\x1b[")  # nothing to move over the first time
    assert second.startswith("\x1b[2A")  # back over the header and the row
    assert "RUNNING" in second and "PENDING" not in second


COSTS = [
    (
        "long-job",
        {
            "currency": "USD",
            "spend": "0.000069",
            "on_demand_equivalent": "0.000240",
            "saving": "0.000171",
            "segments": [
                {
                    "provider": "aws",
                    "region": "us-west-2",
                    "instance_type": "t3.medium",
                    "hours": "0.003250",
                    "spot_price_per_hour": "0.014560",
                    "cost": "0.000047",
                    "on_demand_cost": "0.000135",
                    "started_at": "2026-01-01T00:00:00Z",
                    "ended_at": "2026-01-01T00:00:11.7Z",
                },
                {
                    "provider": "azure",
                    "region": "westus2",
                    "instance_type": "Standard_D2s_v5",
                    "hours": "0.001083",
                    "spot_price_per_hour": "0.021120",
                    "cost": "0.000022",
                    "on_demand_cost": "0.000105",
                    "started_at": "2026-01-01T00:00:12Z",
                    "ended_at": "2026-01-01T00:00:15.9Z",
                },
            ],
        },
    ),
    (
        "cpu-batch",
        {"spend": "0.000131", "on_demand_equivalent": "0.000760", "saving": "0.000629", "segments": []},
    ),
]


def test_the_cost_summary_lists_each_segment_and_the_saving_versus_on_demand():
    lines, totals = cost_lines(COSTS)

    assert totals.spend == Decimal("0.000200")
    assert totals.on_demand == Decimal("0.001000")
    assert totals.saving == Decimal("0.000800")
    segments = [line.split() for line in lines[1:3]]
    assert segments[0][:4] == ["long-job", "1", "aws/us-west-2", "t3.medium"]
    assert segments[0][4:6] == ["11.7", "s"]  # 0.003250 h
    assert segments[0][-2:] == ["$0.000047", "$0.000135"]
    assert segments[1][:4] == ["long-job", "2", "azure/westus2", "Standard_D2s_v5"]
    assert lines[-1] == ("  total spend $0.000200; the same seconds on-demand $0.001000; saved $0.000800 (80%)")


def test_money_and_percent_read_well_and_never_raise():
    assert money("0.000047") == "$0.000047"
    assert money(None) == "$0.000000"
    assert percent("0.8", "1") == "80%"
    assert percent("1", "0") == "-"


def test_the_offers_table_shows_the_top_of_a_quote():
    candidate = {
        "rank": 1,
        "provider": "gcp",
        "region": "us-central1",
        "availability_zone": "us-central1-a",
        "instance_type": "g2-standard-4",
        "vcpu": 4,
        "memory_gb": 16.0,
        "gpu_count": 1,
        "gpu_type": "L4",
        "spot_price": "0.224000",
        "on_demand_price": "0.706832",
        "saving_pct": "68.3",
    }

    lines = offers_table([candidate] * 7, limit=5)

    assert len(lines) == 6
    assert "4 vCPU 16 GiB 1xL4" in lines[1]
    assert lines[1].split()[-3:] == ["$0.2240/h", "$0.7068/h", "68.3%"]


def offer(provider: str, zone: str, instance_type: str = "t") -> dict:
    return {"provider": provider, "region": zone[:-1], "availability_zone": zone, "instance_type": instance_type}


class FakeQuote:
    """The quote API over a fixed ranking: zones pin it as the real one does."""

    def __init__(self, ranking: list[dict]) -> None:
        self.ranking = ranking

    def __call__(self, requirements: dict, limit: int) -> list[dict]:
        zones = requirements.get("zones")
        return [o for o in self.ranking if not zones or o["availability_zone"] in zones][:limit]


def test_the_long_job_is_pinned_so_that_its_next_offer_is_on_another_cloud():
    quote = FakeQuote([offer("aws", "a1"), offer("aws", "a2"), offer("azure", "z1"), offer("gcp", "g1")])

    pinned, first, then = cross_cloud_requirements(quote, {"vcpu": 2, "memory_gb": 4})

    assert pinned == {"vcpu": 2, "memory_gb": 4, "zones": ["a1", "z1"]}
    assert (first["provider"], then["provider"]) == ("aws", "azure")


def test_a_zone_whose_next_offer_stays_on_the_same_cloud_is_skipped():
    # In a1, aws has a second type ranked before azure's z1 offer: pinning to a1+z1 would move within aws.
    quote = FakeQuote([offer("aws", "a1"), offer("aws", "a1", "t-large"), offer("azure", "z1"), offer("gcp", "g1")])

    with pytest.raises(DemoFailed, match="no two zones"):
        cross_cloud_requirements(quote, {"vcpu": 2, "memory_gb": 4})


def test_the_demo_environment_is_the_embedded_default_in_its_own_var_dir(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgres://db.example/prod")
    monkeypatch.setenv("REDIS_URL", "redis://cache.example/0")
    monkeypatch.setenv("STORAGE_BUCKET", "prod-bucket")
    monkeypatch.setenv("CLOUD_BACKENDS", "aws=aws")
    monkeypatch.setenv("PATH", "/usr/bin")

    env = demo_environment(Path("/srv/app/var/demo"))

    assert not {"DATABASE_URL", "REDIS_URL", "STORAGE_BUCKET", "CLOUD_BACKENDS"} & set(env)
    assert env["ARBITRAGE_VAR_DIR"] == "/srv/app/var/demo"
    assert env["DJANGO_SETTINGS_MODULE"] == "arbitrage.settings"
    assert float(env["WORKFLOW_TIME_SCALE"]) < 1
    assert env["PATH"] == "/usr/bin"


def test_an_endpoint_call_reads_as_one_line():
    held = EndpointCall(0.0, 3.6, 200, {"provider": "azure", "instance_id": "local-9c9f", "progress": 7,
                                       "restored_progress": 7})  # fmt: skip
    refused = EndpointCall(0.0, 0.1, 503, {}, "503 the workload is moving (Retry-After 5)")

    assert held.line() == "azure local-9c9f: progress 7 (restored 7)  [held 3.6 s by the gateway]"
    assert refused.line() == "503 the workload is moving (Retry-After 5)"


def test_an_api_error_is_its_one_line_message():
    answer = Answer(422, {"error": {"status": 422, "code": "no_placement", "message": "No offer has 999 vCPU."}})

    assert error_message(answer) == "422 No offer has 999 vCPU."
    assert error_message(Answer(502, None)) == "HTTP 502"
