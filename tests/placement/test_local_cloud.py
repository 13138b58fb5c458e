"""The local cloud runs real processes: these tests talk to them over HTTP and look at /proc."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.conf import settings as django_settings

from placement.clouds import base, local
from placement.clouds.base import InstanceInfo, InstanceRequest, InstanceState, Market

REGION = "us-east-1"
TIMEOUT = 20.0  # generous: a busy 2-core CI machine
MANAGED = {base.MANAGED_BY_TAG: base.MANAGED_BY_VALUE, "workload-id": "wl-1"}

T = TypeVar("T")


@pytest.fixture(autouse=True)
def local_cloud(settings: Any, tmp_path: Path) -> Iterator[None]:
    """A cloud of its own per test, fast boots, and no process left behind."""
    settings.VAR_DIR = tmp_path
    settings.LOCAL_CLOUD_BOOT_DELAY_MS = 0
    settings.LOCAL_CLOUD_STOP_GRACE_SECONDS = 5
    yield
    local.terminate_all()


@pytest.fixture
def aws() -> local.LocalCloud:
    return local.LocalCloud("aws")


def make_request(token: str = "token-1", **overrides: Any) -> InstanceRequest:
    fields: dict[str, Any] = {
        "idempotency_token": token,
        "region": REGION,
        "availability_zone": "us-east-1a",
        "instance_type": "m5.large",
        "max_price_per_hour": Decimal("0.10"),
        "tags": MANAGED,
    }
    return InstanceRequest(**{**fields, **overrides})


def eventually(check: Callable[[], T], what: str, timeout: float = TIMEOUT) -> T:
    """Poll ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not (result := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        pause.wait(0.05)
    return result


def http(info: InstanceInfo, path: str = "/health", body: bytes | None = None) -> tuple[int, dict[str, Any]]:
    url = f"http://{info.address(8080)}{path}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def answer(info: InstanceInfo, path: str = "/health") -> tuple[int, dict[str, Any]]:
    """The first answer of the instance, once it is up."""

    def attempt() -> tuple[int, dict[str, Any]] | None:
        try:
            return http(info, path)
        except OSError:  # not listening yet
            return None

    return eventually(attempt, f"{info.instance_id} to answer {path}")


def state_of(cloud: local.LocalCloud, info: InstanceInfo) -> InstanceInfo:
    return cloud.get_instance_status(info.instance_id, info.region)


def wait_for_state(cloud: local.LocalCloud, info: InstanceInfo, state: InstanceState) -> InstanceInfo:
    def reached() -> InstanceInfo | None:
        current = state_of(cloud, info)
        return current if current.state is state else None

    return eventually(reached, f"{info.instance_id} to be {state}")


def pid_running(pid: int) -> bool:
    """Like ``os.kill(pid, 0)``, but a zombie counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def processes_of(instance_id: str) -> list[int]:
    """Live processes started with this instance's INSTANCE_ID."""
    marker = f"INSTANCE_ID={instance_id}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in environ and pid_running(int(entry.name)):
            pids.append(int(entry.name))
    return pids


def test_the_factory_is_registered_and_stands_in_for_any_provider() -> None:
    assert base.cloud_factories()["local"] is local.LocalCloud
    assert local.LocalCloud("gcp").provider == "gcp"


def test_an_instance_is_a_real_agent_on_its_own_port(aws: local.LocalCloud) -> None:
    info = aws.create_spot_instance(make_request())

    assert re.fullmatch(r"local-[0-9a-f]{12}", info.instance_id)
    assert info.state is InstanceState.PENDING
    assert (info.public_ip, info.region, info.availability_zone, info.instance_type) == (
        "127.0.0.1",
        REGION,
        "us-east-1a",
        "m5.large",
    )
    assert info.service_port and info.tags == MANAGED and info.launched_at is not None
    status, health = answer(info)
    assert (status, health["status"]) == (200, "ok")
    status, page = http(info, "/some/path?x=1")
    assert status == 200
    assert page["instance_id"] == info.instance_id
    assert (page["provider"], page["workload_id"], page["path"]) == ("aws", "wl-1", "/some/path?x=1")
    eventually(lambda: http(info, "/")[1]["progress"] >= 1, "the agent to make progress")
    status, echoed = http(info, "/upload", body=b"x" * 1000)
    assert (status, echoed["body_length"], echoed["instance_id"]) == (200, 1000, info.instance_id)


def test_pending_for_the_boot_delay_then_running(aws: local.LocalCloud, settings: Any) -> None:
    settings.LOCAL_CLOUD_BOOT_DELAY_MS = 2000
    info = aws.create_spot_instance(make_request())

    assert state_of(aws, info).state is InstanceState.PENDING
    wait_for_state(aws, info, InstanceState.RUNNING)
    assert (time.time() - info.launched_at.timestamp()) >= 2.0


def test_the_same_token_gives_the_same_instance_and_one_process(aws: local.LocalCloud) -> None:
    first = aws.create_spot_instance(make_request("token-1"))
    again = aws.create_spot_instance(make_request("token-1"))
    other = aws.create_spot_instance(make_request("token-2"))
    on_gcp = local.LocalCloud("gcp").create_spot_instance(make_request("token-1"))

    assert again.instance_id == first.instance_id and again.service_port == first.service_port
    assert processes_of(first.instance_id) == [local.instance_pid(first.instance_id)]
    assert len({first.instance_id, other.instance_id, on_gcp.instance_id}) == 3
    assert len({first.service_port, other.service_port, on_gcp.service_port}) == 3


def test_concurrent_creates_in_two_processes_make_one_instance(tmp_path: Path) -> None:
    # Each process creates the shared token and one of its own, after waiting for the other to be ready.
    snippet = """
import json, sys, threading, time
from decimal import Decimal
from pathlib import Path
import django
django.setup()
from django.conf import settings
root, name = Path(sys.argv[1]), sys.argv[2]
settings.VAR_DIR = root
settings.LOCAL_CLOUD_BOOT_DELAY_MS = 0
from placement.clouds import local
from placement.clouds.base import InstanceRequest
(root / f"ready-{name}").touch()
deadline = time.monotonic() + 20
while len(list(root.glob("ready-*"))) < 2 and time.monotonic() < deadline:
    threading.Event().wait(0.01)
cloud = local.LocalCloud("aws")
made = [
    cloud.create_spot_instance(InstanceRequest(token, "us-east-1", "us-east-1a", "m5.large", Decimal("1"), {}))
    for token in ("shared", f"own-{name}")
]
print(json.dumps([[info.instance_id, info.service_port] for info in made]))
"""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    creators = [
        subprocess.Popen(
            [sys.executable, "-c", snippet, str(tmp_path), name],
            cwd=django_settings.BASE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    results = []
    for creator in creators:
        out, err = creator.communicate(timeout=60)
        assert creator.returncode == 0, err
        results.append(json.loads(out))

    (shared_a, own_a), (shared_b, own_b) = results
    assert shared_a == shared_b
    assert len({shared_a[0], own_a[0], own_b[0]}) == 3
    assert len({shared_a[1], own_a[1], own_b[1]}) == 3, "two instances were given the same port"
    assert [info.instance_id for info in local.instances_all()].count(shared_a[0]) == 1
    assert len(processes_of(shared_a[0])) == 1
    # The creators have exited; the instances run on, detached from them.
    shared = local.LocalCloud("aws").get_instance_status(shared_a[0], REGION)
    assert answer(shared)[0] == 200


def test_a_launch_whose_creator_died_before_recording_it_is_adopted(aws: local.LocalCloud) -> None:
    info = aws.create_spot_instance(make_request())
    pid = local.instance_pid(info.instance_id)
    # The worker was killed between starting the process and writing the record.
    (Path(django_settings.VAR_DIR) / "local-cloud" / "instances" / f"{info.instance_id}.json").unlink()

    again = aws.create_spot_instance(make_request())

    assert (again.instance_id, again.service_port) == (info.instance_id, info.service_port)
    assert local.instance_pid(info.instance_id) == pid
    assert processes_of(info.instance_id) == [pid]


def test_terminate_stops_the_process_and_is_idempotent(aws: local.LocalCloud) -> None:
    info = aws.create_spot_instance(make_request())
    answer(info)
    pid = local.instance_pid(info.instance_id)
    assert pid and pid_running(pid) and local.process_alive(info.instance_id)

    started = time.monotonic()
    aws.terminate_instance(info.instance_id, REGION)

    assert time.monotonic() - started < 5, "the agent should exit on SIGTERM, well before the grace period"
    assert not pid_running(pid) and not local.process_alive(info.instance_id)
    final = state_of(aws, info)
    assert (final.state, final.state_reason) == (InstanceState.TERMINATED, "terminated by request")
    assert "exit 0" in local.instance_log_path(info.instance_id).read_text()
    aws.terminate_instance(info.instance_id, REGION)
    aws.terminate_instance("local-000000000000", REGION)
    assert state_of(aws, info).state is InstanceState.TERMINATED


def test_terminate_kills_a_process_that_ignores_sigterm(aws: local.LocalCloud, settings: Any) -> None:
    settings.LOCAL_CLOUD_STOP_GRACE_SECONDS = 1
    settings.LOCAL_CLOUD_ALLOW_COMMANDS = True  # and so it runs in its sandbox, which the signals must reach
    stubborn = (
        sys.executable,
        "-c",
        "import signal, threading; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ignoring SIGTERM', flush=True); threading.Event().wait()",
    )
    info = aws.create_spot_instance(make_request(command=stubborn))
    pid = local.instance_pid(info.instance_id)
    log = local.instance_log_path(info.instance_id)
    eventually(lambda: "ignoring SIGTERM" in log.read_text(), "the command to ignore SIGTERM")

    started = time.monotonic()
    aws.terminate_instance(info.instance_id, REGION)

    assert time.monotonic() - started >= 1, "killed only after the grace period"
    assert pid and not pid_running(pid)
    assert state_of(aws, info).state is InstanceState.TERMINATED


def test_unknown_ids_are_not_found(aws: local.LocalCloud) -> None:
    info = aws.create_spot_instance(make_request())
    for cloud, instance_id, region in [
        (aws, "local-000000000000", REGION),
        (aws, "../../etc/passwd", REGION),
        (aws, info.instance_id, "eu-west-1"),  # ids are scoped by region, as on a real cloud
        (local.LocalCloud("gcp"), info.instance_id, REGION),  # and by provider
    ]:
        with pytest.raises(base.InstanceNotFound):
            cloud.get_instance_status(instance_id, region)


def test_injected_create_failures_count_down(aws: local.LocalCloud) -> None:
    local.faults_set(fail_next_creates=2)

    for _ in range(2):
        with pytest.raises(base.TransientCloudError) as raised:
            aws.create_spot_instance(make_request())
        assert raised.value.retryable
    info = aws.create_spot_instance(make_request())

    assert answer(info)[0] == 200
    assert local.faults_get()["fail_next_creates"] == 0
    local.faults_set(fail_next_creates=1, create_error="permanent")
    with pytest.raises(base.PermanentCloudError):
        aws.create_spot_instance(make_request("token-2"))
    local.faults_clear()
    assert local.faults_get()["fail_next_creates"] == 0


def test_a_pool_without_capacity_refuses_creates_other_pools_work(aws: local.LocalCloud) -> None:
    local.faults_set(no_capacity_pools=[{"region": REGION, "instance_type": "m5.large"}])

    with pytest.raises(base.CapacityError) as raised:
        aws.create_spot_instance(make_request())
    assert raised.value.message.startswith("InsufficientInstanceCapacity: ")
    assert raised.value.code == "InsufficientInstanceCapacity"
    with pytest.raises(base.CapacityError, match="ZONE_RESOURCE_POOL_EXHAUSTED"):  # no provider key: every cloud
        local.LocalCloud("gcp").create_spot_instance(make_request())
    assert local.instances_all() == []

    other_type = aws.create_spot_instance(make_request("token-2", instance_type="c5.large"))
    other_region = aws.create_spot_instance(make_request("token-3", region="us-west-2"))
    assert answer(other_type)[0] == 200 and answer(other_region)[0] == 200


def test_fault_configuration_is_validated() -> None:
    with pytest.raises(ValueError, match="pool"):
        local.faults_set(no_capacity_pools=[{"zone": "us-east-1a"}])
    with pytest.raises(ValueError, match="create_error"):
        local.faults_set(create_error="sometimes")


def test_never_healthy_instances_answer_503_on_health(aws: local.LocalCloud) -> None:
    local.faults_set(never_healthy=True)
    info = aws.create_spot_instance(make_request())

    assert answer(info)[0] == 503
    assert http(info, "/")[0] == 200
    wait_for_state(aws, info, InstanceState.RUNNING)  # up, just not healthy


def test_an_instance_that_dies_after_booting_is_failed(aws: local.LocalCloud) -> None:
    local.faults_set(die_after_seconds=1)
    info = aws.create_spot_instance(make_request())
    answer(info)

    failed = wait_for_state(aws, info, InstanceState.FAILED)

    assert failed.state_reason == "process exited with status 1"
    assert not local.process_alive(info.instance_id)
    assert state_of(aws, info) == failed  # recorded: it reads the same later


def test_a_command_gets_the_instance_env_and_failing_during_boot_is_failed(
    aws: local.LocalCloud, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.LOCAL_CLOUD_BOOT_DELAY_MS = 10_000
    settings.LOCAL_CLOUD_ALLOW_COMMANDS = True
    monkeypatch.setenv("SECRET_KEY", "the control plane's secret")
    script = (
        "import os; "
        "print(os.environ['GREETING'], os.environ['PORT'], os.environ['INSTANCE_ID'], os.environ['PROVIDER'], "
        "os.environ['WORKLOAD_ID'], 'SECRET_KEY' in os.environ); "
        "raise SystemExit(3)"
    )
    info = aws.create_spot_instance(make_request(command=(sys.executable, "-c", script), env={"GREETING": "hi"}))

    failed = wait_for_state(aws, info, InstanceState.FAILED)

    assert failed.state_reason == "process exited with status 3 during boot"
    log = local.instance_log_path(info.instance_id).read_text()
    assert f"hi {info.service_port} {info.instance_id} aws wl-1 False" in log


def test_interrupt_preempts_the_instance(aws: local.LocalCloud) -> None:
    info = aws.create_spot_instance(make_request())
    answer(info)
    pid = local.instance_pid(info.instance_id)

    local.interrupt(info.instance_id)

    assert pid and not pid_running(pid)
    preempted = state_of(aws, info)
    assert (preempted.state, preempted.state_reason) == (InstanceState.PREEMPTED, "spot interruption")
    aws.terminate_instance(info.instance_id, REGION)
    assert state_of(aws, info).state is InstanceState.TERMINATED
    local.interrupt(info.instance_id)  # nothing left to reclaim
    assert state_of(aws, info).state is InstanceState.TERMINATED


# --- on demand ---------------------------------------------------------------------------------


def test_an_on_demand_instance_is_recorded_as_on_demand_and_reported_so(aws: local.LocalCloud) -> None:
    info = aws.create_instance(make_request(market=Market.ON_DEMAND))

    assert info.market is Market.ON_DEMAND
    assert answer(info)[0] == 200
    assert local._load(info.instance_id)["market"] == "on_demand"
    running = wait_for_state(aws, info, InstanceState.RUNNING)
    assert running.market is Market.ON_DEMAND
    assert [(listed.instance_id, listed.market) for listed in aws.list_managed_instances(REGION)] == [
        (info.instance_id, Market.ON_DEMAND)
    ]
    spot = aws.create_instance(make_request("token-2"))
    assert (spot.market, local._load(spot.instance_id)["market"]) == (Market.SPOT, "spot")


def test_a_retried_on_demand_create_finds_the_same_instance(aws: local.LocalCloud) -> None:
    first = aws.create_instance(make_request(market=Market.ON_DEMAND))
    again = aws.create_instance(make_request(market=Market.ON_DEMAND))

    assert (again.instance_id, again.market) == (first.instance_id, Market.ON_DEMAND)
    assert len(local.instances_all()) == 1


def test_an_on_demand_instance_ignores_an_injected_spot_capacity_fault(aws: local.LocalCloud) -> None:
    local.faults_set(no_capacity_pools=[{"provider": "aws", "instance_type": "m5.large"}])
    with pytest.raises(base.CapacityError):
        aws.create_instance(make_request("spot-token"))

    info = aws.create_instance(make_request("on-demand-token", market=Market.ON_DEMAND))

    assert answer(info)[0] == 200
    assert [instance.instance_id for instance in local.instances_all()] == [info.instance_id]


def test_an_on_demand_instance_cannot_be_interrupted(aws: local.LocalCloud) -> None:
    info = aws.create_instance(make_request(market=Market.ON_DEMAND))
    answer(info)
    pid = local.instance_pid(info.instance_id)

    with pytest.raises(local.InstanceNotInterruptible, match="on demand") as raised:
        local.interrupt(info.instance_id)
    assert isinstance(raised.value, base.CloudError) and raised.value.provider == "aws"
    with pytest.raises(local.InstanceNotInterruptible):
        local.interruption_notice(info.instance_id, grace_seconds=0)

    assert pid and pid_running(pid)  # refused: the workload was never stopped
    assert state_of(aws, info).state is InstanceState.RUNNING
    assert answer(info)[0] == 200


def test_instances_recorded_before_markets_existed_read_as_spot(aws: local.LocalCloud) -> None:
    info = aws.create_instance(make_request())
    record = local._load(info.instance_id)
    del record["market"]
    local._save(record)

    assert state_of(aws, info).market is Market.SPOT
    local.interrupt(info.instance_id)  # and can still be reclaimed
    assert state_of(aws, info).state is InstanceState.PREEMPTED


def test_list_managed_instances_filters_by_provider_region_tag_and_state(aws: local.LocalCloud) -> None:
    wanted = aws.create_spot_instance(make_request("a"))
    aws.create_spot_instance(make_request("b", region="us-west-2"))
    aws.create_spot_instance(make_request("c", tags={"workload-id": "not ours"}))
    local.LocalCloud("gcp").create_spot_instance(make_request("d"))
    gone = aws.create_spot_instance(make_request("e"))
    aws.terminate_instance(gone.instance_id, REGION)

    assert [info.instance_id for info in aws.list_managed_instances(REGION)] == [wanted.instance_id]
    assert len(local.instances_all()) == 5


# --- customer commands and their sandbox ---------------------------------------------------------------

HOSTILE = r"""
import json, os, pathlib, sys
found = {"uid": os.getuid(), "secret_env": sorted(k for k in os.environ if k in ("SECRET_KEY", "DATABASE_URL"))}
for name, path in json.loads(sys.argv[1]).items():
    try:
        target = pathlib.Path(path)
        found[name] = sorted(p.name for p in target.iterdir()) if target.is_dir() else target.read_text()[:40]
    except OSError as error:
        found[name] = type(error).__name__
    if found[name] == []:
        found[name] = "empty"
pathlib.Path("mine.txt").write_text("written")
found["own_dir"] = pathlib.Path("mine.txt").read_text()
print("FOUND " + json.dumps(found), flush=True)
"""


def test_a_command_is_refused_unless_the_operator_enabled_commands(aws: local.LocalCloud) -> None:
    with pytest.raises(local.CommandsDisabled, match="LOCAL_CLOUD_ALLOW_COMMANDS"):
        aws.create_spot_instance(make_request(command=(sys.executable, "-c", "print('hi')")))

    assert local.instances_all() == []


def test_a_hostile_command_reads_nothing_of_the_control_plane_or_another_instance(
    aws: local.LocalCloud, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.LOCAL_CLOUD_ALLOW_COMMANDS = True
    monkeypatch.setenv("SECRET_KEY", "the control plane's secret")
    monkeypatch.setenv("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/arbitrage")
    secret = Path(settings.VAR_DIR) / "secret_key"
    secret.write_text("a secret key of the service")
    database = Path(settings.VAR_DIR) / "db.sqlite3"
    database.write_text("rows of every customer")
    neighbour = aws.create_spot_instance(make_request("token-neighbour"))
    answer(neighbour)  # the sample agent runs in its sandbox too
    neighbour_file = local.instance_log_path(neighbour.instance_id).with_name("data.txt")
    neighbour_file.write_text("the neighbour's data")
    targets = {
        "secret_key": str(secret),
        "database": str(database),
        "var_dir": str(settings.VAR_DIR),
        "neighbour_file": str(neighbour_file),
        "neighbour_dir": str(neighbour_file.parent),
        "service_environ": f"/proc/{os.getpid()}/environ",
        "root_home": "/root",
    }

    hostile = aws.create_spot_instance(
        make_request("token-hostile", command=(sys.executable, "-c", HOSTILE, json.dumps(targets)))
    )
    log = local.instance_log_path(hostile.instance_id)
    line = eventually(lambda: re.search(r"^FOUND (.*)$", log.read_text(), re.MULTILINE), "the command's report")
    found = json.loads(line.group(1))

    assert found["uid"] != 0 and found["uid"] != os.getuid()
    assert found["secret_env"] == []
    for name in ("secret_key", "database", "neighbour_file"):
        assert found[name] in {"FileNotFoundError", "PermissionError"}, (name, found[name])
    assert found["neighbour_dir"] in {"FileNotFoundError", "PermissionError"}
    assert found["var_dir"] == ["local-cloud"], found["var_dir"]  # only the way down to its own directory
    interpreter = {Path(prefix).resolve() for prefix in (sys.base_prefix, sys.prefix)}
    needed = {path.relative_to("/root").parts[0] for path in interpreter if path.is_relative_to("/root")}
    assert found["root_home"] == "empty" or set(found["root_home"]) <= needed, found["root_home"]
    assert found["service_environ"] in {"FileNotFoundError", "PermissionError"}
    assert found["own_dir"] == "written"
    assert (local.instance_log_path(hostile.instance_id).with_name("mine.txt")).read_text() == "written"


def test_console_output_is_the_instances_stdout_and_stderr_from_an_offset(aws: local.LocalCloud) -> None:
    info = aws.create_instance(make_request())
    # The agent says where it listens (stderr), then one progress line a second (stdout).
    output = eventually(lambda: (data := aws.console_output(info.instance_id, REGION)) and b"progress" in data and data,
                        "a progress line")  # fmt: skip
    assert b"listening on 127.0.0.1" in output
    aws.terminate_instance(info.instance_id, REGION)
    # Still there once the instance ended, and read from any byte on.
    whole = aws.console_output(info.instance_id, REGION)
    assert whole.startswith(output) and b"shutting down" in whole
    assert aws.console_output(info.instance_id, REGION, offset=10, limit=5) == whole[10:15]
    assert aws.console_output(info.instance_id, REGION, offset=len(whole)) == b""
    with pytest.raises(base.InstanceNotFound):
        aws.console_output(info.instance_id, "eu-west-1")
    with pytest.raises(base.InstanceNotFound):
        local.LocalCloud("gcp").console_output(info.instance_id, REGION)
