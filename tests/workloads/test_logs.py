"""Workload logs: the instances' output collected into the database and read through the API."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from celery import current_app
from django.db import connection
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from rest_framework.test import APIClient

from placement.clouds import local
from placement.clouds.base import InstanceRequest
from storage.services import storage_initialize
from tests.factories import WorkloadFactory, WorkloadInstanceFactory, customer_with_key
from tests.live import wait_until
from tests.workloads.test_provision import api_for, reaches, run_succeeds, submit
from workloads import services, tasks
from workloads.models import LogStream, WorkloadInstance, WorkloadLogCursor, WorkloadLogLine, WorkloadStatus
from workloads.recovery import health_sweep_run
from workloads.services import instance_terminate, workload_log_mark, workload_logs_expire

S = WorkloadStatus
REGION = "us-east-1"


@pytest.fixture
def stopped_instance(db, settings, local_cloud_clean):
    """A real local instance, stopped, whose output file the test then writes itself.

    Its row says it still runs, so collection treats it as live until the test ends it.
    """
    settings.LOCAL_CLOUD_BOOT_DELAY_MS = 0
    cloud = local.LocalCloud("aws")
    info = cloud.create_instance(
        InstanceRequest(
            idempotency_token=f"logs-{timezone.now().timestamp()}",
            region=REGION,
            availability_zone="us-east-1a",
            instance_type="m5.large",
            max_price_per_hour=Decimal("0.10"),
            tags={},
        )
    )
    local.terminate_all()
    local.instance_log_path(info.instance_id).write_bytes(b"")
    return info.instance_id


def write(instance_id: str, data: bytes) -> None:
    with open(local.instance_log_path(instance_id), "ab") as log:
        log.write(data)


def texts(workload) -> list[str]:
    return list(WorkloadLogLine.objects.filter(workload=workload).order_by("position").values_list("text", flat=True))


def test_collection_stores_whole_lines_once_and_keeps_an_unfinished_one_for_later(customer, stopped_instance):
    workload = WorkloadFactory(customer=customer, status=S.RUNNING)
    instance = WorkloadInstanceFactory(workload=workload, provider="aws", region=REGION, instance_id=stopped_instance)

    write(stopped_instance, b"epoch 1 loss 0.5\r\nepoch 2 loss 0.3\nepoch 3 lo")
    assert tasks.logs_collect() == 2  # the beat task: every live instance
    assert texts(workload) == ["epoch 1 loss 0.5", "epoch 2 loss 0.3"]

    write(stopped_instance, b"ss 0.2\n" + "é".encode() * 5000 + b"\n")
    services.workload_output_collect(workload_id=workload.id)
    services.workload_output_collect(workload_id=workload.id)  # nothing new: nothing twice
    lines = list(WorkloadLogLine.objects.filter(workload=workload).order_by("position"))
    assert [line.text for line in lines[2:]] == ["epoch 3 loss 0.2", "é" * 4096, "é" * 904]
    assert [line.position for line in lines] == sorted({line.position for line in lines})
    assert {(line.instance_id, line.provider, line.stream) for line in lines} == {
        (stopped_instance, "aws", LogStream.OUTPUT)
    }

    # Ending the instance keeps its last words, even without a newline; nothing is read after that.
    write(stopped_instance, b"saving the model")
    instance_terminate(instance=instance)
    assert texts(workload)[-1] == "saving the model"
    assert WorkloadLogCursor.objects.get(instance=instance).finished_at is not None
    write(stopped_instance, b"\nlate\n")
    assert services.workload_outputs_collect() == 0  # (the beat task would wait its paced turn)
    assert "late" not in texts(workload)


@pytest.mark.django_db(transaction=True)
def test_collectors_that_race_store_each_line_once(customer, stopped_instance):
    workload = WorkloadFactory(customer=customer, status=S.RUNNING)
    WorkloadInstanceFactory(workload=workload, provider="aws", region=REGION, instance_id=stopped_instance)
    write(stopped_instance, b"".join(f"line {n}\n".encode() for n in range(200)))
    start = threading.Barrier(4)

    def collect() -> None:
        try:
            start.wait()
            services.workload_output_collect(workload_id=workload.id)
        finally:
            connection.close()

    threads = [threading.Thread(target=collect) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert texts(workload) == [f"line {n}" for n in range(200)]


def page(client: APIClient, workload, **query) -> dict:
    response = client.get(f"/api/v1/workloads/{workload.id}/logs", query)
    assert response.status_code == 200, response.content
    return response.json()


def test_the_api_pages_by_position(api, customer):
    workload = WorkloadFactory(customer=customer, status=S.RUNNING)
    for n in range(5):
        workload_log_mark(workload_id=workload.id, text=f"line {n}", instance_id="local-abc", provider="gcp")

    first = page(api, workload, limit=2)
    assert first["workload_id"] == str(workload.id)
    assert [line["text"] for line in first["lines"]] == ["line 0", "line 1"]
    assert first["more"] is True and first["ended"] is False
    line = first["lines"][0]
    assert set(line) == {"position", "time", "instance_id", "provider", "stream", "text"}
    assert (line["instance_id"], line["provider"], line["stream"]) == ("local-abc", "gcp", "marker")
    assert line["time"].endswith("Z")

    second = page(api, workload, after=first["next_after"], limit=2)
    assert [line["text"] for line in second["lines"]] == ["line 2", "line 3"]
    rest = page(api, workload, after=second["next_after"])
    assert [line["text"] for line in rest["lines"]] == ["line 4"] and rest["more"] is False
    empty = page(api, workload, after=rest["next_after"])
    assert empty["lines"] == [] and empty["next_after"] == rest["next_after"] and empty["more"] is False
    # Last-Event-ID (an event stream's reconnect) works like after.
    response = api.get(f"/api/v1/workloads/{workload.id}/logs", HTTP_LAST_EVENT_ID=str(second["next_after"]))
    assert [line["text"] for line in response.json()["lines"]] == ["line 4"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"after": "-1"}, "after"),
        ({"after": "x"}, "after"),
        ({"after": str(2**64)}, "after"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"follow": "yes"}, "follow"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_queries_are_400_naming_the_field(api, customer, query, field):
    workload = WorkloadFactory(customer=customer)
    response = api.get(f"/api/v1/workloads/{workload.id}/logs", query)
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]


def test_a_bad_last_event_id_is_400(api, customer):
    workload = WorkloadFactory(customer=customer)
    response = api.get(f"/api/v1/workloads/{workload.id}/logs", HTTP_LAST_EVENT_ID="-3")
    assert response.status_code == 400
    assert "Last-Event-ID" in response.json()["error"]["fields"]


def test_another_customers_workload_is_404_and_no_key_is_401(api, other_api, customer):
    workload = WorkloadFactory(customer=customer)
    workload_log_mark(workload_id=workload.id, text="secret")
    for query in ({}, {"follow": "1"}):
        # JSON errors, also for a client that accepts only an event stream.
        response = other_api.get(f"/api/v1/workloads/{workload.id}/logs", query, HTTP_ACCEPT="text/event-stream")
        assert response.status_code == 404
        assert response["Content-Type"] == "application/json"
        assert response.json()["error"]["code"] == "not_found"
    assert APIClient().get(f"/api/v1/workloads/{workload.id}/logs").status_code == 401


def events(response) -> list[tuple[str, dict]]:
    """The stream's events as (event, data, id); comments left out."""
    assert response["Content-Type"] == "text/event-stream"
    body = b"".join(response.streaming_content).decode()
    found = []
    for block in body.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if fields:
            found.append((fields["event"], json.loads(fields["data"]), fields.get("id")))
    return found


def test_follow_streams_the_lines_then_the_end_of_an_ended_workload(api, customer, stopped_instance):
    workload = WorkloadFactory(customer=customer, status=S.TERMINATED)
    WorkloadInstanceFactory(
        workload=workload, provider="aws", region=REGION, instance_id=stopped_instance, terminated_at=timezone.now()
    )
    workload_log_mark(workload_id=workload.id, text="started")
    write(stopped_instance, b"done\nbye")  # not collected yet: the read collects it to the end

    response = api.get(f"/api/v1/workloads/{workload.id}/logs", {"follow": "true"}, HTTP_ACCEPT="text/event-stream")
    assert response.status_code == 200
    got = events(response)
    assert [(event, data.get("text")) for event, data, _ in got] == [
        ("line", "started"),
        ("line", "done"),
        ("line", "bye"),
        ("end", None),
    ]
    assert got[-1][1] == {"status": "TERMINATED"}
    assert [event_id for _, data, event_id in got[:-1]] == [str(data["position"]) for _, data, _ in got[:-1]]
    # After the last line, a follower gets the end at once; so does a JSON reader.
    assert [event for event, *_ in events(api.get(f"/api/v1/workloads/{workload.id}/logs", {"follow": "1"},
                                                   HTTP_LAST_EVENT_ID=got[-2][2]))] == ["end"]  # fmt: skip
    assert page(api, workload)["ended"] is True


def test_the_retention_sweep_deletes_lines_once_the_storage_retention_ends(db, settings):
    settings.LOGS_RETENTION_DAYS = 30
    now = timezone.now()
    old = WorkloadFactory(status=S.TERMINATED, terminated_at=now - timedelta(days=31))
    recent = WorkloadFactory(status=S.TERMINATED, terminated_at=now - timedelta(days=29))
    kept_storage = WorkloadFactory(status=S.TERMINATED, terminated_at=now - timedelta(days=31))
    storage_initialize(workload_id=kept_storage.id, quota_bytes=1024, retention_days=90)
    expired_storage = WorkloadFactory(status=S.TERMINATED, terminated_at=now - timedelta(days=3))
    config = storage_initialize(workload_id=expired_storage.id, quota_bytes=1024, retention_days=2)
    config.read_only_since = now - timedelta(days=3)
    config.save()
    running = WorkloadFactory(status=S.RUNNING)
    for workload in (old, recent, kept_storage, expired_storage, running):
        for n in range(3):
            workload_log_mark(workload_id=workload.id, text=f"line {n}")

    assert workload_logs_expire(batch_size=2) == 6
    assert tasks.logs_expire() == 0
    left = set(WorkloadLogLine.objects.values_list("workload_id", flat=True))
    assert left == {recent.id, kept_storage.id, running.id}


def test_a_live_workloads_read_collects_its_new_output_first(api, customer, stopped_instance):
    workload = WorkloadFactory(customer=customer, status=S.RUNNING)
    WorkloadInstanceFactory(workload=workload, provider="aws", region=REGION, instance_id=stopped_instance)
    write(stopped_instance, b"hello\n")
    assert [line["text"] for line in page(api, workload)["lines"]] == ["hello"]
    write(stopped_instance, b"world\n")
    assert [line["text"] for line in page(api, workload)["lines"]] == ["hello", "world"]


@pytest.mark.django_db(transaction=True)
def test_a_workloads_output_reaches_the_api_across_a_migration_until_it_ends(
    catalog, worker, local_cloud_clean, settings
):
    settings.HEALTH_CHECK_TIMEOUT_SECONDS = 1
    settings.LOGS_FOLLOW_MAX_SECONDS = 120  # a follow that never ends fails the test instead of hanging it
    _, key = customer_with_key()
    client = api_for(key)
    workload = submit(client)
    assert reaches(workload, S.RUNNING, S.FAILED) == S.RUNNING, workload.failure_reason
    run_succeeds(workload, "provision")
    first = WorkloadInstance.objects.get(workload=workload)

    # The agent prints a progress line a second; the API has them, page by page.
    def progress_of(instance) -> list[dict]:
        lines = page(client, workload, limit=1000)["lines"]
        return [line for line in lines if line["instance_id"] == instance.instance_id and "progress" in line["text"]]

    wait_until(lambda: len(progress_of(first)) >= 3, what="three progress lines")
    whole = page(client, workload, limit=1000)["lines"]
    paged, after = [], 0
    while True:
        part = page(client, workload, after=after, limit=2)
        paged += part["lines"]
        after = part["next_after"]
        if not part["more"]:
            break
    assert paged[: len(whole)] == whole

    # A migration: the old instance's lines, a marker, then the new instance's lines.
    local_cloud_clean.interrupt(first.instance_id)
    assert health_sweep_run().interrupted == 1
    run_succeeds(workload, "migrate")
    second = WorkloadInstance.objects.exclude(id=first.id).get(workload=workload)
    wait_until(lambda: len(progress_of(second)) >= 2, what="the new instance's progress lines")
    lines = page(client, workload, limit=1000)["lines"]
    [marker_at] = [n for n, line in enumerate(lines) if line["stream"] == "marker"]
    marker = lines[marker_at]
    assert marker["text"] == (
        f"moved {first.provider}/{first.region}/{first.availability_zone} → "
        f"{second.provider}/{second.region}/{second.availability_zone}"
    )
    assert (marker["instance_id"], marker["provider"]) == (second.instance_id, second.provider)
    assert {line["instance_id"] for line in lines[:marker_at]} == {first.instance_id}
    assert {line["instance_id"] for line in lines[marker_at + 1 :]} == {second.instance_id}

    # A follower gets the lines as they come and the end once the workload is terminated.
    assert client.post(f"/api/v1/workloads/{workload.id}/terminate").status_code == 202
    response = client.get(f"/api/v1/workloads/{workload.id}/logs", {"follow": "1", "after": lines[-1]["position"]})
    got = events(response)
    assert got[-1][:2] == ("end", {"status": "TERMINATED"})
    assert all(event == "line" for event, *_ in got[:-1])
    assert any("shutting down" in data["text"] for _, data, _ in got[:-1])  # the new instance's last words
    final = page(client, workload, limit=1000)
    assert final["ended"] is True and final["lines"][-1]["position"] == got[-2][1]["position"]


def test_beat_collects_every_few_seconds_and_expires_hourly(db):
    # Made by the migration (the test database is migrated); the tasks are found by name.
    collect = PeriodicTask.objects.get(task="workloads.logs_collect")
    assert collect.enabled and (collect.interval.every, collect.interval.period) == (5, "seconds")
    expire = PeriodicTask.objects.get(task="workloads.logs_expire")
    assert expire.enabled and (expire.interval.every, expire.interval.period) == (1, "hours")
    assert {"workloads.logs_collect", "workloads.logs_expire"} <= set(current_app.tasks)
