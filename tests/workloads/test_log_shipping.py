"""Output an instance pushes itself: ``POST /api/v1/agent/logs``, and the shipper (``agent/ship.py``) for real."""

from __future__ import annotations

import base64
import socket
import subprocess
import sys
import time

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.tokens import agent_token_for
from agent import ship as shipper_module
from placement.clouds.base import get_cloud
from tests.errors import assert_error
from tests.factories import WorkloadFactory, WorkloadInstanceFactory
from tests.live import ROOT
from tests.storage.conftest import storage_workload
from tests.workloads.test_agent_api import agent_for
from tests.workloads.test_logs import texts
from workloads.models import LogStream, Workload, WorkloadLogCursor, WorkloadLogLine, WorkloadStatus
from workloads.services import MAX_PENDING_BYTES, instance_output_collect

S = WorkloadStatus
URL = "/api/v1/agent/logs"
SHIP = ROOT / "agent" / "ship.py"


def push(agent: APIClient, offset: int, data: bytes, **fields):
    body = {"offset": offset, "data_b64": base64.b64encode(data).decode(), **fields}
    return agent.post(URL, body, format="json")


@pytest.fixture
def running(customer):
    """A running workload with its instance row (on a cloud whose console says nothing)."""
    workload = WorkloadFactory(customer=customer, status=S.RUNNING)
    return workload, WorkloadInstanceFactory(workload=workload, provider="aws")


def test_batches_append_by_byte_offset_and_a_resend_stores_nothing_twice(running):
    workload, instance = running
    agent = agent_for(workload)

    first = push(agent, 0, b"epoch 1 loss 0.5\nepoch 2 lo")
    assert first.status_code == 202, first.content
    assert first.json() == {
        "workload_id": str(workload.id),
        "instance_id": instance.instance_id,
        "offset": 17,  # the unfinished line waits: it is sent again with its end
        "stored": 1,
        "finished": False,
    }
    assert texts(workload) == ["epoch 1 loss 0.5"]

    again = push(agent, 0, b"epoch 1 loss 0.5\nepoch 2 loss 0.3\n")  # the answer was lost: resent, and more
    assert again.status_code == 202 and again.json()["offset"] == 34 and again.json()["stored"] == 1
    assert push(agent, 17, b"epoch 2 loss 0.3\n").json()["stored"] == 0
    assert texts(workload) == ["epoch 1 loss 0.5", "epoch 2 loss 0.3"]
    lines = WorkloadLogLine.objects.filter(workload=workload)
    assert {(line.instance_id, line.provider, line.stream) for line in lines} == {
        (instance.instance_id, "aws", LogStream.OUTPUT)
    }

    # Undecodable bytes keep their place: offsets count bytes, not characters.
    assert push(agent, 34, b"caf\xe9 \xff\n").json()["offset"] == 41
    assert texts(workload)[-1] == "caf\ufffd \ufffd"


def test_a_batch_past_the_end_is_a_409_that_says_where_to_resend_from(running):
    workload, _ = running
    agent = agent_for(workload)
    push(agent, 0, b"one\n")
    error = assert_error(push(agent, 10, b"three\n"), 409, "log_offset_gap")
    assert error["expected_offset"] == 4
    assert texts(workload) == ["one"]

    # The instance gave the bytes in between up: it says so, a marker says how many were lost.
    resumed = push(agent, 10, b"three\n", resume=True)
    assert resumed.status_code == 202 and resumed.json()["offset"] == 16
    lines = list(WorkloadLogLine.objects.filter(workload=workload).order_by("position"))
    assert [(line.stream, line.text) for line in lines] == [
        (LogStream.OUTPUT, "one"),
        (LogStream.MARKER, "6 bytes of output were lost on the way from the instance."),
        (LogStream.OUTPUT, "three"),
    ]


def test_final_stores_the_unfinished_line_and_closes_the_instances_log(running):
    workload, instance = running
    agent = agent_for(workload)
    push(agent, 0, b"saving the model")
    assert texts(workload) == []
    done = push(agent, 0, b"saving the model", final=True)
    assert done.status_code == 202 and done.json()["finished"] is True and done.json()["offset"] == 16
    assert texts(workload) == ["saving the model"]
    assert WorkloadLogCursor.objects.get(instance=instance).finished_at is not None

    assert push(agent, 0, b"saving the model", final=True).status_code == 202  # a resend: harmless
    assert_error(push(agent, 16, b"late\n"), 409, "log_finished")
    assert texts(workload) == ["saving the model"]


def test_a_long_unfinished_line_is_stored_once_it_is_long(running):
    workload, _ = running
    answer = push(agent_for(workload), 0, b"x" * MAX_PENDING_BYTES).json()
    assert answer["offset"] == MAX_PENDING_BYTES
    assert "".join(texts(workload)) == "x" * MAX_PENDING_BYTES


def test_the_pulled_and_the_pushed_output_share_the_cursor(running, monkeypatch):
    """The cloud's console and the instance's pushes carry the same bytes: each line is stored once."""
    workload, instance = running
    console = b"from the console\nand pushed\n"
    monkeypatch.setattr(
        get_cloud("aws"), "console_output", lambda _id, _region, *, offset, limit: console[offset : offset + limit]
    )
    push(agent_for(workload), 0, console[:20])
    assert instance_output_collect(instance=instance) == 1
    assert push(agent_for(workload), 17, console[17:]).json()["stored"] == 0
    assert texts(workload) == ["from the console", "and pushed"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"data_b64": ""}, "offset"),
        ({"offset": -1, "data_b64": ""}, "offset"),
        ({"offset": "0", "data_b64": ""}, "offset"),
        ({"offset": 0}, "data_b64"),
        ({"offset": 0, "data_b64": "not base64!"}, "data_b64"),
        ({"offset": 0, "data_b64": 5}, "data_b64"),
        ({"offset": 0, "data_b64": "", "final": "yes"}, "final"),
        ({"offset": 0, "data_b64": "", "colour": "red"}, "colour"),
    ],
)
def test_a_bad_batch_is_a_400_naming_the_field(running, body, field):
    workload, _ = running
    error = assert_error(agent_for(workload).post(URL, body, format="json"), 400, "invalid")
    assert field in error["fields"]


def test_a_batch_over_256_kib_is_a_413(running, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1 << 20  # past the body limit: the batch's own limit answers
    workload, _ = running
    error = assert_error(push(agent_for(workload), 0, b"x" * (256 * 1024 + 1)), 413, "log_batch_too_large")
    assert error["max_bytes"] == 256 * 1024
    assert texts(workload) == []
    assert push(agent_for(workload), 0, b"x" * (256 * 1024)).status_code == 202


def test_only_the_workloads_own_token_writes_into_its_log(running, customer):
    workload, _ = running
    other = WorkloadFactory(customer=customer, status=S.RUNNING)  # no instance
    assert_error(push(agent_for(other), 0, b"intruder\n"), 409, "no_current_instance")
    assert_error(push(APIClient(), 0, b"anonymous\n"), 401)
    customer_key = APIClient()
    customer_key.credentials(HTTP_AUTHORIZATION="Bearer wat_not-a-token")
    assert_error(push(customer_key, 0, b"forged\n"), 401)
    assert texts(workload) == [] and texts(other) == []


def test_a_terminated_workloads_token_may_not_write_its_log(customer):
    workload = storage_workload(customer)
    WorkloadInstanceFactory(workload=workload)
    Workload.objects.filter(id=workload.id).update(status=S.TERMINATED, terminated_at=timezone.now())
    error = assert_error(push(agent_for(workload), 0, b"after the end\n"), 403, "agent_token_read_only")
    assert "read_only_until" in error
    assert texts(workload) == []


# --- the shipper, for real, against a live API --------------------------------------------


def ship(*command: str, api_url: str, token: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {"ARBITRAGE_API_URL": api_url, "WORKLOAD_AGENT_TOKEN": token, "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, str(SHIP), "--", *command], env=env, capture_output=True, timeout=timeout, check=False
    )


#: 900 lines of 40 bytes (more than one batch), a pause (a batch on the clock), stderr, a status.
PRINTS = """
import sys, time
for n in range(900):
    print(f"step {n:04d} " + "." * 29, flush=n in (450, 899))
    if n == 450:
        time.sleep(2.5)
sys.stderr.write("oops\\n")
sys.exit(3)
"""


@pytest.mark.django_db(transaction=True)
def test_the_shipper_copies_the_output_ships_it_in_order_and_exits_with_the_commands_status(
    live_server, customer_and_key
):
    customer, key = customer_and_key
    workload = WorkloadFactory(customer=customer, status=S.RUNNING)
    WorkloadInstanceFactory(workload=workload, provider="aws")

    done = ship(sys.executable, "-c", PRINTS, api_url=live_server.url, token=agent_token_for(workload.id))

    assert done.returncode == 3
    expected = [f"step {n:04d} " + "." * 29 for n in range(900)] + ["oops"]
    assert done.stdout.decode().splitlines() == expected  # the console still has it all
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    answer = api.get(f"/api/v1/workloads/{workload.id}/logs", {"limit": 1000}).json()
    assert [line["text"] for line in answer["lines"]] == expected
    assert WorkloadLogCursor.objects.get(instance__workload=workload).finished_at is not None


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_shipper_runs_the_command_to_its_end_when_the_api_is_down(tmp_path):
    marker = tmp_path / "ran"
    command = f"import pathlib\nprint('working')\npathlib.Path({str(marker)!r}).write_text('done')\nraise SystemExit(7)"
    started = time.monotonic()
    done = ship(sys.executable, "-c", command, api_url=f"http://127.0.0.1:{closed_port()}", token="wat_x")
    assert done.returncode == 7
    assert done.stdout == b"working\n"
    assert marker.read_text() == "done"
    assert time.monotonic() - started < 50  # a few bounded tries at the end, then it gives up


def test_the_shipper_without_an_api_just_runs_the_command_and_a_missing_one_is_127():
    done = ship("/bin/sh", "-c", "echo hello; exit 4", api_url="", token="")
    assert (done.returncode, done.stdout) == (4, b"hello\n")
    missing = ship("/no/such/command", api_url="", token="")
    assert missing.returncode == 127 and b"cannot run /no/such/command" in missing.stdout


def test_the_shipper_forwards_sigterm_to_the_command(tmp_path):
    ready = tmp_path / "ready"
    command = (
        "import pathlib, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: (print('stopping', flush=True), sys.exit(5)))\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        "time.sleep(60)"
    )
    shipper = subprocess.Popen(
        [sys.executable, str(SHIP), "--", sys.executable, "-c", command], stdout=subprocess.PIPE, env={}
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert time.monotonic() < deadline and shipper.poll() is None
            time.sleep(0.05)
        shipper.terminate()
        out, _ = shipper.communicate(timeout=30)
    finally:
        shipper.kill()
    assert (shipper.returncode, out) == (5, b"stopping\n")


@pytest.mark.django_db(transaction=True)
def test_the_shipper_says_what_it_had_to_drop_and_goes_on(live_server, customer, monkeypatch):
    workload = WorkloadFactory(customer=customer, status=S.RUNNING)
    WorkloadInstanceFactory(workload=workload, provider="aws")
    monkeypatch.setattr(shipper_module, "CAP", 64)  # as if the API had been away for long
    shipper = shipper_module.Shipper(
        {"ARBITRAGE_API_URL": live_server.url, "WORKLOAD_AGENT_TOKEN": agent_token_for(workload.id)}
    )
    shipper.add(b"".join(f"line {n:02d}\n".encode() for n in range(20)))  # 160 bytes: the oldest 96 go

    assert shipper.send(True) is True
    lines = list(WorkloadLogLine.objects.filter(workload=workload).order_by("position"))
    assert [(line.stream, line.text) for line in lines] == [
        (LogStream.MARKER, "96 bytes of output were lost on the way from the instance."),
        *((LogStream.OUTPUT, f"line {n:02d}") for n in range(12, 20)),
    ]
    assert WorkloadLogCursor.objects.get(instance__workload=workload).offset == 160
