"""The local cloud in fleet mode: one host process serves every instance, each a real agent on its own address."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from accounts.tokens import agent_token_for
from agent.checkpoint import StorageClient
from placement.clouds import base, local
from placement.clouds.base import InstanceInfo, InstanceState, Market
from tests.placement.test_local_cloud import REGION, answer, eventually, http, make_request, state_of, wait_for_state
from tests.storage.conftest import embedded, storage_workload  # noqa: F401 (embedded is a fixture)

# Every fleet instance listens on the port it asks for, on an address of its own.
PORT = 18080


@pytest.fixture(autouse=True)
def fleet_cloud(settings: Any, tmp_path: Path) -> Iterator[None]:
    """A cloud (and so a fleet host) of its own per test; the host and its instances stopped at the end."""
    settings.VAR_DIR = tmp_path
    settings.LOCAL_CLOUD_HOST_MODE = "fleet"
    settings.LOCAL_CLOUD_BOOT_DELAY_MS = 0
    yield
    local.terminate_all()
    assert local.fleet_host_pid() is None


@pytest.fixture
def aws() -> local.LocalCloud:
    return local.LocalCloud("aws")


def create(cloud: local.LocalCloud, token: str, **overrides: Any) -> InstanceInfo:
    return cloud.create_instance(make_request(token, health_check_port=PORT, **overrides))


def refuses_connections(info: InstanceInfo) -> bool:
    with socket.socket() as probe:
        probe.settimeout(5)
        return probe.connect_ex((info.public_ip, info.service_port)) != 0


def test_instances_are_agents_on_addresses_of_their_own_booting_503_then_healthy(
    aws: local.LocalCloud, settings: Any
) -> None:
    settings.LOCAL_CLOUD_BOOT_DELAY_MS = 1500  # ample time to see it boot, even on a busy machine
    created: list[InstanceInfo] = []
    threads = [
        threading.Thread(target=lambda token=token: created.append(create(aws, token))) for token in ("a", "b", "c")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    first = created[0]

    status, booting = http(first)
    assert (status, booting) == (503, {"status": "booting", "instance_id": first.instance_id})
    assert state_of(aws, first).state is InstanceState.PENDING
    wait_for_state(aws, first, InstanceState.RUNNING)
    status, health = http(first)
    assert (status, health["status"], health["instance_id"]) == (200, "ok", first.instance_id)

    # Three creates at once started one host; every instance has its own loopback address, and the asked port.
    assert len({info.public_ip for info in created}) == 3
    assert all(info.public_ip.startswith("127.") and info.service_port == PORT for info in created)
    assert len(local.instances_all()) == 3 and local.fleet_host_pid() is not None
    assert all(local.instance_pid(info.instance_id) is None for info in created)  # no process of their own
    # Each boots from its own launch, which a busy machine may have spread out.
    status, page = eventually(
        lambda: (reply := answer(created[2], "/some/path?x=1"))[0] == 200 and reply, "the third instance to boot"
    )
    assert (page["instance_id"], page["provider"], page["workload_id"]) == (created[2].instance_id, "aws", "wl-1")
    assert page["path"] == "/some/path?x=1"
    status, echoed = http(created[1], "/upload", body=b"x" * 1000)
    assert (status, echoed["body_length"]) == (200, 1000)


def test_terminate_closes_the_instances_port_and_leaves_the_others(aws: local.LocalCloud) -> None:
    doomed, kept = create(aws, "doomed"), create(aws, "kept")
    assert answer(doomed)[0] == 200

    aws.terminate_instance(doomed.instance_id, REGION)

    assert refuses_connections(doomed) and not local.process_alive(doomed.instance_id)
    final = state_of(aws, doomed)
    assert (final.state, final.state_reason) == (InstanceState.TERMINATED, "terminated by request")
    assert "exit 0" in local.instance_log_path(doomed.instance_id).read_text()
    assert answer(kept)[0] == 200 and state_of(aws, kept).state is InstanceState.RUNNING
    aws.terminate_instance(doomed.instance_id, REGION)  # again: nothing happens
    assert state_of(aws, doomed).state is InstanceState.TERMINATED


def test_a_spot_instance_gets_its_notice_reports_it_and_progress_then_is_reclaimed(
    aws: local.LocalCloud, webhook_receiver: Any
) -> None:
    api = webhook_receiver.url.removesuffix("/hooks")
    token = "wat_secret"
    env = {"ARBITRAGE_API_URL": api, "WORKLOAD_AGENT_TOKEN": token, "AGENT_PROGRESS_SECONDS": "0.5"}
    env["AGENT_WORK_SECONDS"] = "1"
    info = create(aws, "spot", env=env)
    on_demand = create(aws, "on-demand", market=Market.ON_DEMAND)

    finished = eventually(
        lambda: [entry for entry in webhook_receiver.received if entry["json"].get("finished")], "a progress report"
    )
    assert finished[0]["json"] == {"completed_seconds": 1, "finished": True}
    assert finished[0]["headers"]["Authorization"] == f"Bearer {token}"

    reclaim_at = local.interruption_notice(info.instance_id, grace_seconds=0.5)

    notice = eventually(
        lambda: [entry["json"] for entry in webhook_receiver.received if "reason" in entry["json"]], "the report"
    )
    assert notice == [{"checkpoint": None, "reason": "interruption notice"}]
    reclaimed = wait_for_state(aws, info, InstanceState.PREEMPTED)
    assert reclaimed.state_reason == "spot interruption (after notice)"
    assert time.time() >= reclaim_at.timestamp()
    assert refuses_connections(info)
    with pytest.raises(local.InstanceNotInterruptible):
        local.interrupt(on_demand.instance_id)
    assert answer(on_demand)[0] == 200


def test_interrupt_reclaims_a_spot_instance_at_once(aws: local.LocalCloud) -> None:
    info = create(aws, "spot")
    assert answer(info)[0] == 200

    local.interrupt(info.instance_id)

    assert refuses_connections(info)
    preempted = state_of(aws, info)
    assert (preempted.state, preempted.state_reason) == (InstanceState.PREEMPTED, "spot interruption")


def test_health_switches_and_faults_work_as_on_a_process(aws: local.LocalCloud) -> None:
    info = create(aws, "switch")
    assert http(info, "/_agent/unhealthy", body=b"") == (200, {"healthy": False})
    assert http(info)[0] == 503
    assert http(info, "/_agent/healthy", body=b"")[0] == 200 and http(info)[0] == 200
    assert http(info, "/_agent/checkpoint", body=b"") == (503, {"checkpoint": None})  # no storage: none to save

    local.faults_set(never_healthy=True)
    sick = create(aws, "sick")
    assert http(sick) == (503, {"status": "unhealthy", "instance_id": sick.instance_id})
    local.faults_set(die_after_seconds=0.2)
    crashing = create(aws, "crashing")
    failed = wait_for_state(aws, crashing, InstanceState.FAILED)
    assert failed.state_reason == "agent exited with status 1"
    assert refuses_connections(crashing)

    local.faults_set(no_capacity_pools=[{"instance_type": "m5.large"}])
    with pytest.raises(base.CapacityError):
        create(aws, "no-room")


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("embedded")
def test_a_durable_instance_checkpoints_when_asked_and_the_next_one_restores_it(
    aws: local.LocalCloud, customer: Any, live_server: Any, settings: Any
) -> None:
    settings.PUBLIC_API_URL = live_server.url  # where the embedded storage's signed URLs point
    workload = storage_workload(customer)
    env = {
        "ARBITRAGE_API_URL": live_server.url,
        "WORKLOAD_AGENT_TOKEN": agent_token_for(workload.id),
        "WORKLOAD_STORAGE_ENABLED": "1",
    }
    tags = {base.MANAGED_BY_TAG: base.MANAGED_BY_VALUE, "workload-id": str(workload.id)}
    first = create(aws, "first", env=env, tags=tags)
    eventually(lambda: http(first, "/")[1].get("progress", 0) >= 1, "some work done")

    status, saved = http(first, "/_agent/checkpoint", body=b"")
    assert status == 200 and saved["checkpoint"]
    storage = StorageClient(live_server.url, env["WORKLOAD_AGENT_TOKEN"])
    latest = storage.latest_checkpoint()
    assert latest["checkpoint_id"] == saved["checkpoint"] and latest["manifest"]["metadata"]["final"] is True
    aws.terminate_instance(first.instance_id, REGION)

    second = create(aws, "second", env=env, tags=tags)
    restored = eventually(lambda: http(second, "/")[1].get("restored_progress"), "the restore")
    assert restored == latest["manifest"]["metadata"]["progress"] >= 1


def test_a_custom_command_is_refused_on_the_fleet_host(aws: local.LocalCloud, settings: Any) -> None:
    settings.LOCAL_CLOUD_ALLOW_COMMANDS = True

    with pytest.raises(local.FleetCommandsUnsupported, match="LOCAL_CLOUD_HOST_MODE") as refused:
        create(aws, "command", command=("python3", "-m", "http.server"))

    assert isinstance(refused.value, base.PermanentCloudError)
    assert local.instances_all() == [] and local.fleet_host_pid() is None


def test_when_the_host_dies_its_instances_are_terminated_and_a_new_host_serves_new_ones(
    aws: local.LocalCloud,
) -> None:
    first, second = create(aws, "first"), create(aws, "second")
    assert answer(first)[0] == 200
    host = local.fleet_host_pid()
    assert host is not None

    os.kill(host, signal.SIGKILL)
    eventually(lambda: local.fleet_host_pid() is None, "the host to die")

    gone = wait_for_state(aws, first, InstanceState.TERMINATED)
    assert gone.state_reason == "the fleet host that ran it stopped, and its instances with it"
    assert refuses_connections(first) and refuses_connections(second)
    assert {info.state for info in local.instances_all()} == {InstanceState.TERMINATED}
    assert not local.LocalCloud("aws").list_managed_instances(REGION)
    later = create(aws, "later")
    assert answer(later)[0] == 200 and local.fleet_host_pid() not in (None, host)
    assert state_of(aws, first).state is InstanceState.TERMINATED  # the new host does not revive the old ones
