"""Websockets and streamed bodies through a real gateway process, against the real sample agent."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from accounts.tokens import access_token_for
from tests.factories import customer_with_key
from tests.gateway.helpers import S, request_is_held, reroute, routed_workload
from tests.live import wait_until
from workloads.services import workload_transition

pytestmark = pytest.mark.django_db(transaction=True)


def ws_url(gateway, workload, path: str = "/echo") -> str:
    return f"ws://127.0.0.1:{gateway.port}/w/{workload.id}{path}"


def open_websocket(url: str, headers: dict[str, str] | None = None):
    return connect(url, additional_headers=headers, open_timeout=60, close_timeout=10, compression=None)


def refusal(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """The HTTP status and JSON body a refused websocket handshake got."""
    with pytest.raises(InvalidStatus) as refused:
        open_websocket(url, headers).close()
    return refused.value.response.status_code, json.loads(refused.value.response.body)


# --- websockets -----------------------------------------------------------------


def test_a_websocket_is_proxied_both_ways_with_the_instances_close_code(gateway, agent_factory):
    agent = agent_factory("i-ws")
    workload = routed_workload(agent.endpoint)

    with open_websocket(ws_url(gateway, workload)) as ws:
        ws.send("hello, instance")
        assert ws.recv(timeout=30) == "hello, instance"
        payload = bytes(range(256)) * 1024  # 256 KiB, binary
        ws.send(payload)
        assert ws.recv(timeout=30) == payload
        ws.ping(b"are you there").wait(timeout=30)  # answered; the socket stays open
        ws.send("/instance")
        assert ws.recv(timeout=30) == "i-ws"
        ws.send("/close 4001 done here")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "done here")

    # By its endpoint name too (the socket goes to the gateway), and a close from the client ends it cleanly.
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=30)
    with connect(f"ws://{workload.endpoint}/echo", sock=sock, open_timeout=60, compression=None) as ws:
        ws.send("by name")
        assert ws.recv(timeout=30) == "by name"
        ws.close(4002, "client done")
    assert ws.close_code == 4002


def test_a_private_workloads_websocket_needs_its_key_or_token_and_the_credential_stays_here(gateway, agent_factory):
    agent = agent_factory("i-private-ws")
    customer, key = customer_with_key()
    workload = routed_workload(agent.endpoint, access="private", customer=customer)

    status, body = refusal(ws_url(gateway, workload))
    assert status == 401 and "private" in body["error"]
    assert refusal(ws_url(gateway, workload), {"Authorization": "Bearer wrong"})[0] == 401
    assert refusal(ws_url(gateway, workload, "/_agent/unhealthy"), {"Authorization": f"Bearer {key}"})[0] == 404

    for headers in ({"Authorization": f"Bearer {key}"}, {"X-Workload-Token": access_token_for(workload.id)}):
        with open_websocket(ws_url(gateway, workload), headers) as ws:
            ws.send("/headers")
            seen = json.loads(ws.recv(timeout=30))
        assert "authorization" not in seen and "x-workload-token" not in seen
        assert key not in json.dumps(seen)
        assert seen["x-forwarded-host"] == f"127.0.0.1:{gateway.port}"


def test_a_websocket_gets_the_states_answer_before_it_runs_and_after_it_is_gone(gateway):
    assert refusal(ws_url(gateway, routed_workload(None, status=S.PROVISIONING)))[0] == 503
    assert refusal(ws_url(gateway, routed_workload(None, status=S.TERMINATED)))[0] == 410


def test_an_open_websocket_is_closed_with_1012_on_migration_and_a_reconnect_reaches_the_new_instance(
    gateway, agent_factory
):
    old = agent_factory("i-old")
    workload = routed_workload(old.endpoint)
    with open_websocket(ws_url(gateway, workload)) as ws:
        ws.send("/instance")
        assert ws.recv(timeout=30) == "i-old"

        workload_transition(workload_id=workload.id, transition="spot_interrupt", message="test: reclaimed")
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=30)
    assert closed.value.rcvd.code == 1012

    wait_until(lambda: request_is_held(gateway.url, workload.endpoint), timeout=30, what="the gateway holding requests")
    old.stop()
    new = agent_factory("i-new")
    workload_transition(workload_id=workload.id, transition="recover", message="test: migrating")
    reroute(workload, new.endpoint)
    workload_transition(workload_id=workload.id, transition="mark_ready", message="test: migrated")

    # A reconnect made during the move waits for it (as a request does), then lands on the new instance.
    with open_websocket(ws_url(gateway, workload)) as again:
        again.send("/instance")
        assert again.recv(timeout=30) == "i-new"


# --- streamed bodies ------------------------------------------------------------


def arrivals(gateway, path: str) -> tuple[list[tuple[float, bytes]], float, httpx.Response]:
    """Each piece of a streamed GET with when it arrived, when the body ended, and the response."""
    pieces = []
    started = time.monotonic()
    with gateway.client.stream("GET", path) as response:
        for chunk in response.iter_raw():
            pieces.append((time.monotonic() - started, chunk))
    return pieces, time.monotonic() - started, response


def test_server_sent_events_and_a_chunked_body_arrive_as_the_instance_sends_them(gateway, agent_factory):
    agent = agent_factory("i-stream")
    workload = routed_workload(agent.endpoint)

    # The instance takes 4 s to send 5 events: the first is at the client long before the last is sent.
    pieces, ended, response = arrivals(gateway, f"/w/{workload.id}/events?count=5&interval=1")
    assert response.status_code == 200 and response.headers["content-type"] == "text/event-stream"
    assert b"".join(chunk for _, chunk in pieces) == b"".join(b"id: %d\ndata: %d\n\n" % (n, n) for n in range(5))
    assert ended >= 4 and pieces[0][0] < ended - 2

    pieces, ended, response = arrivals(gateway, f"/w/{workload.id}/stream?chunks=5&size=70000&interval=1")
    assert response.status_code == 200
    assert sum(len(chunk) for _, chunk in pieces) == 5 * 70000
    assert ended >= 4 and pieces[0][0] < ended - 2


def test_a_request_body_over_the_limit_gets_413_declared_or_streamed(gateway_factory, agent_factory):
    gateway = gateway_factory(GATEWAY_MAX_REQUEST_BODY_BYTES="65536")
    agent = agent_factory("i-limit")
    workload = routed_workload(agent.endpoint)

    declared = gateway.client.post(f"/w/{workload.id}/upload", content=b"x" * 70000)
    assert declared.status_code == 413
    assert declared.json() == {"error": "The request body is too large.", "limit_bytes": 65536}

    def chunks(count: int):
        for _ in range(count):
            yield b"y" * 16384

    streamed = gateway.client.post(f"/w/{workload.id}/upload", content=chunks(8))  # chunked, 128 KiB
    assert streamed.status_code == 413 and streamed.json()["limit_bytes"] == 65536

    within = gateway.client.post(f"/w/{workload.id}/upload", content=chunks(3))  # chunked, 48 KiB, streamed on
    assert within.status_code == 200 and within.json()["body_length"] == 3 * 16384
