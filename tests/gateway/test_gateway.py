"""The routing gateway end to end: a real uvicorn gateway process in front of real upstreams."""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
import time

import httpx
import pytest
from django.conf import settings
from rest_framework.test import APIClient

from accounts.models import ApiKey
from accounts.services import api_key_revoke
from accounts.tokens import access_token_for, agent_token_for
from tests.factories import customer_with_key
from tests.gateway.helpers import free_port, request_is_held, reroute, routed_workload
from tests.live import wait_until
from workloads import routing
from workloads.models import Workload, WorkloadRouting, WorkloadStatus
from workloads.services import workload_transition

S = WorkloadStatus
pytestmark = pytest.mark.django_db(transaction=True)


# --- proxying -------------------------------------------------------------------


def test_get_and_a_streamed_post_round_trip_by_path_and_by_name(gateway, agent_factory):
    agent = agent_factory("i-one")
    workload = routed_workload(agent.endpoint)

    response = gateway.get(workload, "/some/path?x=1&y=%20z")
    assert response.status_code == 200
    assert response.json()["instance_id"] == "i-one"
    assert response.json()["path"] == "/some/path?x=1&y=%20z"

    by_name = gateway.client.get("/by/name?q=2", headers={"Host": workload.endpoint})
    assert by_name.status_code == 200
    assert by_name.json()["instance_id"] == "i-one" and by_name.json()["path"] == "/by/name?q=2"

    chunk = bytes(range(256)) * 256  # 64 KiB
    count = 48  # 3 MiB, sent as it is produced

    def produce():
        for _ in range(count):
            yield chunk

    posted = gateway.client.post(
        f"/w/{workload.id}/upload", content=produce(), headers={"Content-Length": str(len(chunk) * count)}
    )
    assert posted.status_code == 200
    assert posted.json()["body_length"] == len(chunk) * count
    assert posted.json()["path"] == "/upload"


def test_headers_are_forwarded_and_hop_by_hop_ones_dropped(gateway, echo_upstream):
    workload = routed_workload(echo_upstream.endpoint)

    response = gateway.client.get(
        "/look",
        headers={
            "Host": workload.endpoint,
            "X-Custom": "custom value",
            "X-Forwarded-For": "203.0.113.7",
            "Connection": "keep-alive, X-Client-Hop",
            "X-Client-Hop": "drop me",
            "Keep-Alive": "timeout=5",
            "Proxy-Authorization": "Basic c2VjcmV0",
            "TE": "trailers",
        },
    )

    assert response.status_code == 200
    seen = response.json()["headers"]
    assert seen["x-custom"] == "custom value"
    assert seen["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == workload.endpoint
    for hop in ("x-client-hop", "keep-alive", "proxy-authorization", "te"):
        assert hop not in seen
    assert response.headers["x-upstream-kept"] == "kept"
    assert "x-upstream-hop" not in response.headers
    assert "keep-alive" not in response.headers


# --- answers that follow the workload's state ----------------------------------


def test_every_state_gets_its_documented_answer(gateway_factory, agent_factory):
    gateway = gateway_factory(GATEWAY_MIGRATION_WAIT_SECONDS="1", GATEWAY_RETRY_AFTER_SECONDS="7")
    agent = agent_factory("i-states")

    for status in (S.PENDING, S.PROVISIONING):
        response = gateway.get(routed_workload(None, status=status))
        assert response.status_code == 503, status
        assert response.headers["retry-after"] == "7"
        assert "error" in response.json()

    running = gateway.get(routed_workload(agent.endpoint))
    assert running.status_code == 200 and running.json()["instance_id"] == "i-states"

    # Interrupted and no new instance within the (shortened) wait: 503 after the wait.
    started = time.monotonic()
    interrupted = gateway.get(routed_workload(agent.endpoint, status=S.INTERRUPTED))
    assert interrupted.status_code == 503 and interrupted.headers["retry-after"] == "7"
    assert time.monotonic() - started >= 0.9
    assert gateway.get(routed_workload(None, status=S.UNHEALTHY)).status_code == 503

    for status in (S.TERMINATED, S.FAILED):
        gone = gateway.get(routed_workload(None, status=status))
        assert gone.status_code == 410, status
        assert gone.json()["status"] == status

    assert gateway.get("00000000-0000-4000-8000-000000000000").status_code == 404
    assert gateway.client.get("/w/not-a-workload/").status_code == 404
    assert gateway.client.get("/", headers={"Host": f"nope.workloads.{settings.WORKLOAD_DOMAIN}"}).status_code == 404
    assert gateway.client.get("/", headers={"Host": "example.com"}).status_code == 404
    for response in (gateway.client.get("/w/not-a-workload/"), gateway.get(routed_workload(None, status=S.FAILED))):
        assert response.headers["content-type"] == "application/json" and "error" in response.json()


def test_a_kv_miss_falls_back_to_the_database_and_refills_the_kv(gateway, agent_factory):
    agent = agent_factory("i-db")
    workload = routed_workload(agent.endpoint)
    routing.kv_delete(workload_id=workload.id)

    response = gateway.get(workload)

    assert response.status_code == 200 and response.json()["instance_id"] == "i-db"
    assert routing.kv_get_endpoint(workload_id=workload.id) == agent.endpoint
    assert routing.kv_get_status(workload_id=workload.id) == S.RUNNING


def test_an_upstream_that_refuses_gives_502_and_one_that_hangs_gives_504(gateway_factory):
    gateway = gateway_factory(GATEWAY_UPSTREAM_TIMEOUT_SECONDS="1")
    refused = gateway.get(routed_workload(f"127.0.0.1:{free_port()}"))
    assert refused.status_code == 502 and "error" in refused.json()

    with socket.socket() as silent:  # accepts connections (the backlog does) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        hanging = gateway.get(routed_workload(f"127.0.0.1:{silent.getsockname()[1]}"))
    assert hanging.status_code == 504 and "error" in hanging.json()


# --- access ---------------------------------------------------------------------


def test_a_private_workload_admits_only_its_customers_key_or_its_access_token(gateway, echo_upstream):
    customer, key = customer_with_key()
    _, other_key = customer_with_key()
    workload = routed_workload(echo_upstream.endpoint, access="private", customer=customer)
    other = routed_workload(echo_upstream.endpoint, access="private", customer=customer)

    refused = [
        gateway.get(workload),
        gateway.get(workload, headers={"Authorization": "Bearer wrong-key"}),
        gateway.get(workload, headers={"Authorization": f"Bearer {other_key}"}),
        gateway.get(workload, headers={"Authorization": f"Bearer {access_token_for(other.id)}"}),
        gateway.get(workload, headers={"X-Workload-Token": access_token_for(workload.id) + "0"}),
        gateway.get(workload, headers={"Authorization": f"Basic {key}"}),
    ]
    assert [r.status_code for r in refused] == [401] * len(refused)
    assert refused[0].headers["www-authenticate"].startswith("Bearer")
    assert echo_upstream.requests == []  # none of them reached the instance

    by_key = gateway.get(workload, headers={"Authorization": f"Bearer {key}"})
    by_token = gateway.get(workload, headers={"X-Workload-Token": access_token_for(workload.id)})
    by_bearer_token = gateway.get(workload, headers={"Authorization": f"Bearer {access_token_for(workload.id)}"})
    assert [by_key.status_code, by_token.status_code, by_bearer_token.status_code] == [200, 200, 200]
    # The credential is the gateway's business: the instance never sees it.
    for seen in echo_upstream.requests:
        assert "authorization" not in seen and "x-workload-token" not in seen

    public = routed_workload(echo_upstream.endpoint)
    assert gateway.get(public).status_code == 200


def test_no_credential_of_ours_reaches_an_instance_whatever_the_headers(gateway, echo_upstream):
    customer, key = customer_with_key()
    private = routed_workload(echo_upstream.endpoint, access="private", customer=customer)
    public = routed_workload(echo_upstream.endpoint, customer=customer)
    secrets = [key, access_token_for(private.id), access_token_for(public.id), agent_token_for(private.id)]
    basic_key = base64.b64encode(f"user:{key}".encode()).decode()
    # (workload, headers, the Authorization the instance should see: the workload's own, or none)
    cases = [
        (private, {"Authorization": f"Bearer {key}"}, None),
        (private, {"Authorization": f"bearer  {access_token_for(private.id)}"}, None),
        (private, {"X-Workload-Token": access_token_for(private.id)}, None),
        (private, {"X-Workload-Token": access_token_for(private.id), "Authorization": f"Bearer {key}"}, None),
        (private, {"X-Workload-Token": key, "Authorization": f"Bearer {access_token_for(private.id)}"}, None),
        (private, {"X-Workload-Token": key, "Authorization": f"Basic {basic_key}"}, None),
        (private, {"X-Workload-Token": key, "Authorization": f"Bearer {agent_token_for(private.id)}"}, None),
        (private, {"X-Workload-Token": key, "Authorization": "Bearer eyJ.app.jwt"}, "Bearer eyJ.app.jwt"),
        (public, {"Authorization": f"Bearer {key}"}, None),
        (public, {"X-Workload-Token": access_token_for(public.id)}, None),
        (public, {"X-Workload-Token": "anything", "Authorization": f"Bearer {key}"}, None),
        (public, {"Authorization": f"Token {agent_token_for(private.id)}"}, None),
        (public, {"Authorization": f"Basic {basic_key}"}, None),
        (public, {"Authorization": "Bearer app-session-1"}, "Bearer app-session-1"),
    ]

    for workload, headers, forwarded in cases:
        response = gateway.get(workload, "/look", headers=headers)
        assert response.status_code == 200, (headers, response.text)
        seen = echo_upstream.requests[-1]
        assert "x-workload-token" not in seen, headers
        assert seen.get("authorization") == forwarded, headers
        assert not [s for s in secrets if any(s in value for value in seen.values())], (headers, seen)
    assert len(echo_upstream.requests) == len(cases)


def test_a_revoked_key_is_refused_within_a_second(gateway, echo_upstream):
    customer, key = customer_with_key()
    workload = routed_workload(echo_upstream.endpoint, access="private", customer=customer)
    headers = {"Authorization": f"Bearer {key}"}
    # Checked against the database once and trusted from then on.
    assert [gateway.get(workload, headers=headers).status_code for _ in range(3)] == [200, 200, 200]

    api_key_revoke(api_key=ApiKey.objects.get(customer=customer))
    wait_until(
        lambda: gateway.get(workload, headers=headers).status_code == 401,
        timeout=1.0,
        interval=0.05,
        what="the revoked key to be refused within a second",
    )

    reached = len(echo_upstream.requests)
    assert gateway.get(workload, headers=headers).status_code == 401
    assert gateway.get(workload, headers={"X-Workload-Token": key}).status_code == 401
    assert len(echo_upstream.requests) == reached
    # The workload's access token is not a key: it still opens the workload.
    assert gateway.get(workload, headers={"X-Workload-Token": access_token_for(workload.id)}).status_code == 200


def test_the_agents_control_paths_are_not_reachable_through_the_gateway(gateway, agent_factory, echo_upstream):
    agent = agent_factory("i-control")
    workload = routed_workload(agent.endpoint)

    for path in ("/_agent/unhealthy", "/_agent/checkpoint", "/_agent", "/%5Fagent/unhealthy", "/_AGENT/unhealthy"):
        by_path = gateway.client.post(f"/w/{workload.id}{path}")
        by_name = gateway.client.post(path, headers={"Host": workload.endpoint})
        assert (by_path.status_code, by_name.status_code) == (404, 404), path
        assert "error" in by_path.json()
    # The agent never got them: it is still healthy, and the workload's own paths are proxied.
    assert httpx.get(f"http://{agent.endpoint}/health", timeout=5).status_code == 200
    assert gateway.get(workload, "/health").status_code == 200
    assert gateway.client.post(f"/w/{workload.id}/app/_agent/x").json()["path"] == "/app/_agent/x"
    assert gateway.client.post(f"/w/{workload.id}/_agents").json()["path"] == "/_agents"

    # Also for a private workload with its customer's key: refused before anything else.
    customer, key = customer_with_key()
    private = routed_workload(echo_upstream.endpoint, access="private", customer=customer)
    refused = gateway.get(private, "/_agent/checkpoint", headers={"Authorization": f"Bearer {key}"})
    assert refused.status_code == 404
    assert echo_upstream.requests == []


# --- route changes --------------------------------------------------------------


def request_loop(url: str, host: str, results: list, stop: threading.Event) -> None:
    """GET the workload by name until ``stop``; record (status, instance id, Retry-After) of each answer."""
    with httpx.Client(timeout=60) as http:
        while not stop.is_set():
            try:
                response = http.get(f"{url}/", headers={"Host": host})
                body = response.json()
            except (httpx.HTTPError, ValueError) as exc:  # recorded, so the assertions report it
                results.append((0, repr(exc), None))
                continue
            results.append((response.status_code, body.get("instance_id"), response.headers.get("retry-after")))


def test_requests_keep_reaching_the_workload_across_a_migration(gateway, agent_factory):
    """Migration simulated by hand (the migration workflow is issue 6): interrupt, new instance, re-route."""
    old = agent_factory("i-old")
    workload = routed_workload(old.endpoint)
    results: list[tuple[int, str | None, str | None]] = []
    stop = threading.Event()

    clients = [
        threading.Thread(target=request_loop, args=(gateway.url, workload.endpoint, results, stop)) for _ in range(3)
    ]
    for thread in clients:
        thread.start()
    wait_until(lambda: len(results) >= 5, timeout=30, what="requests through the gateway")

    workload_transition(workload_id=workload.id, transition="spot_interrupt", message="test: reclaimed")
    # The cloud takes the instance back after its notice, not at the same instant: by then the
    # gateway has seen the interruption (its route cache lives at most a second) and holds requests.
    wait_until(lambda: request_is_held(gateway.url, workload.endpoint), timeout=30, what="the gateway holding requests")
    old.stop()
    new = agent_factory("i-new")
    workload_transition(workload_id=workload.id, transition="recover", message="test: migrating")
    reroute(workload, new.endpoint)
    workload_transition(workload_id=workload.id, transition="mark_ready", message="test: migrated")
    wait_until(lambda: any(r[1] == "i-new" for r in results[-3:]), timeout=30, what="answers from the new instance")
    stop.set()
    for thread in clients:
        thread.join(timeout=90)

    for status, instance_id, retry_after in results:
        assert (status == 200 and instance_id in ("i-old", "i-new")) or (status == 503 and retry_after), (
            status,
            instance_id,
        )
    assert any(r[1] == "i-old" for r in results)
    after = httpx.get(f"{gateway.url}/", headers={"Host": workload.endpoint}, timeout=30)
    assert after.status_code == 200 and after.json()["instance_id"] == "i-new"


def test_a_provisioned_workload_is_reached_by_name_and_answers_410_within_a_second_of_termination(
    catalog, worker, gateway, local_cloud_clean
):
    _, key = customer_with_key()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    created = client.post(
        "/api/v1/workloads",
        data=json.dumps({"name": "web", "requirements": {"vcpu": 2, "memory_gb": 4}}),
        content_type="application/json",
    )
    assert created.status_code == 201, created.content
    workload = Workload.objects.get(id=created.json()["id"])
    assert created.json().get("endpoint", workload.endpoint) == workload.endpoint

    def status() -> str:
        workload.refresh_from_db()
        return workload.status

    assert wait_until(lambda: status() in (S.RUNNING, S.FAILED) and workload.status, timeout=90) == S.RUNNING
    route = WorkloadRouting.objects.get(workload=workload)
    response = wait_until(
        lambda: (r := gateway.client.get("/hello", headers={"Host": workload.endpoint})).status_code == 200 and r,
        timeout=10,
        what="the gateway to proxy the running workload",
    )
    assert response.json()["instance_id"] == route.instance_id
    assert response.json()["path"] == "/hello"

    assert client.post(f"/api/v1/workloads/{workload.id}/terminate").status_code == 202
    wait_until(lambda: not WorkloadRouting.objects.filter(workload=workload).exists(), timeout=60, what="unrouting")
    wait_until(lambda: routing.kv_get_endpoint(workload_id=workload.id) is None, timeout=10, what="the KV to follow")
    wait_until(
        lambda: gateway.client.get("/", headers={"Host": workload.endpoint}).status_code == 410,
        timeout=1.0,
        interval=0.05,
        what="410 within a second of the route's removal",
    )
    assert wait_until(lambda: status() == S.TERMINATED and workload.status, timeout=60) == S.TERMINATED
    assert gateway.client.get("/", headers={"Host": workload.endpoint}).status_code == 410


def test_the_endpoint_name_keeps_answering_through_a_real_migration(
    catalog, worker_factory, gateway, local_cloud_clean, live_server
):
    """The migration workflow itself: notice → agent report → re-placement → re-route, under load."""
    from django.core.management import call_command

    from workloads.models import WorkflowRun, WorkloadInstance

    worker_factory(env={"PUBLIC_API_URL": live_server.url})
    _, key = customer_with_key()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    created = client.post(
        "/api/v1/workloads",
        data=json.dumps({"name": "web", "requirements": {"vcpu": 2, "memory_gb": 4}}),
        content_type="application/json",
    )
    workload = Workload.objects.get(id=created.json()["id"])
    wait_until(
        lambda: WorkflowRun.objects.filter(workload=workload, kind="provision", status="succeeded").exists(),
        timeout=90,
        what="provisioning",
    )
    first = WorkloadInstance.objects.get(workload=workload).instance_id
    results: list[tuple[int, str | None, str | None]] = []
    stop = threading.Event()

    clients = [
        threading.Thread(target=request_loop, args=(gateway.url, workload.endpoint, results, stop)) for _ in range(2)
    ]
    for thread in clients:
        thread.start()
    wait_until(lambda: len(results) >= 5, timeout=30, what="requests through the gateway")

    call_command("spot_interrupt", str(workload.id), "--grace", "20", stdout=open(os.devnull, "w"))  # noqa: SIM115
    wait_until(
        lambda: WorkflowRun.objects.filter(workload=workload, kind="migrate", status="succeeded").exists(),
        timeout=90,
        what="the migration",
    )
    second = WorkloadInstance.objects.exclude(instance_id=first).get(workload=workload).instance_id
    wait_until(lambda: any(r[1] == second for r in results[-3:]), timeout=30, what="answers from the new instance")
    stop.set()
    for thread in clients:
        thread.join(timeout=90)

    for status, instance_id, retry_after in results:
        assert (status == 200 and instance_id in (first, second)) or (status == 503 and retry_after), (
            status,
            instance_id,
        )
    assert any(r[1] == first for r in results)
