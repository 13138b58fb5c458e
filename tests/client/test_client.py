"""The client against a real HTTP server on loopback: errors carry the API's body, retries, configuration."""

from __future__ import annotations

import json
import socket
import time

import pytest

from arbitrage_client import (
    AuthenticationFailed,
    BadRequest,
    Client,
    ConfigurationError,
    Conflict,
    ConnectionFailed,
    NotFound,
    ServerError,
    Throttled,
)
from tests.live import ScriptedServer

WORKLOAD = {"id": "8d4c1f9e-0000-4000-8000-000000000001", "name": "trainer", "status": "PENDING"}


def error(status: int, code: str, message: str, **extra) -> dict:
    return {"error": {"status": status, "code": code, "message": message, **extra}}


@pytest.fixture
def server():
    scripted = ScriptedServer()
    yield scripted
    scripted.close()


def client_for(server: ScriptedServer, **kwargs) -> Client:
    return Client(server.url, "ca_test", backoff=0.01, max_backoff=2, **kwargs)


def test_a_validation_error_carries_the_status_code_message_and_fields(server):
    fields = {"requirements.vcpu": ["A valid integer is required."]}
    server.answers = [
        (400, {}, error(400, "invalid", "requirements.vcpu: A valid integer is required.", fields=fields))
    ]

    with pytest.raises(BadRequest) as raised:
        client_for(server).create({"name": "x", "requirements": {"vcpu": 1, "memory_gb": 1}})

    assert raised.value.status == 400
    assert raised.value.code == "invalid"
    assert raised.value.fields == fields
    assert str(raised.value) == "400 invalid: requirements.vcpu: A valid integer is required."
    assert len(server.requests) == 1  # a 400 is not retried


@pytest.mark.parametrize(
    ("status", "kind"), [(401, AuthenticationFailed), (404, NotFound), (409, Conflict), (422, BadRequest)]
)
def test_each_error_status_is_its_own_exception_with_the_views_figures(server, status, kind):
    server.answers = [(status, {}, error(status, "refused", "No.", current_state="STOPPING"))]

    with pytest.raises(kind) as raised:
        client_for(server).terminate(WORKLOAD["id"])

    assert raised.value.extra == {"current_state": "STOPPING"}
    assert raised.value.message == "No."


def test_a_create_sends_the_key_the_body_and_an_idempotency_key(server):
    server.answers = [(201, {}, WORKLOAD)]

    created = client_for(server).create({"name": "trainer", "requirements": {"vcpu": 2, "memory_gb": 4}})

    assert created == WORKLOAD
    [request] = server.requests
    assert (request["method"], request["path"]) == ("POST", "/api/v1/workloads")
    assert request["headers"]["Authorization"] == "Bearer ca_test"
    assert request["headers"]["Idempotency-Key"].startswith("client-")
    assert json.loads(request["body"]) == {"name": "trainer", "requirements": {"vcpu": 2, "memory_gb": 4}}


def test_a_create_is_retried_after_a_5xx_with_the_same_idempotency_key(server):
    server.answers = [(503, {}, error(503, "unavailable", "Try again.")), (0, {}, b""), (201, {}, WORKLOAD)]

    created = client_for(server).create(
        {"name": "trainer", "requirements": {"vcpu": 2, "memory_gb": 4}}, idempotency_key="order-42"
    )

    assert created["id"] == WORKLOAD["id"]
    assert [r["headers"]["Idempotency-Key"] for r in server.requests] == ["order-42"] * 3


def test_a_429_is_retried_after_its_retry_after(server):
    server.answers = [(429, {"Retry-After": "1"}, error(429, "throttled", "Slow down.")), (200, {}, {"count": 0})]

    client = client_for(server)
    began = time.monotonic()
    answer = client.quote({"vcpu": 1, "memory_gb": 1})
    assert time.monotonic() - began >= 1  # it waited as long as it was told
    assert answer == {"count": 0}
    assert len(server.requests) == 2


def test_a_retry_after_longer_than_the_client_waits_is_raised_at_once(server):
    server.answers = [(429, {"Retry-After": "60"}, error(429, "throttled", "Slow down."))]

    with pytest.raises(Throttled) as raised:
        client_for(server).get(WORKLOAD["id"])

    assert raised.value.retry_after == 60
    assert len(server.requests) == 1


def test_a_terminate_is_not_repeated_after_a_5xx_or_a_lost_answer(server):
    server.answers = [(502, {}, error(502, "bad_gateway", "Upstream."))]
    with pytest.raises(ServerError):
        client_for(server).terminate(WORKLOAD["id"])
    server.answers = [(0, {}, b"")]
    with pytest.raises(ConnectionFailed):
        client_for(server).terminate(WORKLOAD["id"])

    assert len(server.requests) == 2  # one each: the first may have stopped it already


def test_reads_give_up_after_their_retries_with_the_last_error(server):
    server.answers = [(500, {}, error(500, "server_error", "Internal server error."))] * 3

    with pytest.raises(ServerError) as raised:
        client_for(server, retries=2).get(WORKLOAD["id"])

    assert raised.value.code == "server_error"
    assert len(server.requests) == 3


def test_an_error_answer_that_is_not_json_still_gives_its_status(server):
    server.answers = [(404, {"Content-Type": "text/html"}, b"<h1>Not Found</h1>")]

    with pytest.raises(NotFound) as raised:
        client_for(server).get(WORKLOAD["id"])

    assert str(raised.value) == "404 http_404: HTTP 404"


def test_list_reads_every_page_with_the_status_filter(server):
    server.answers = [
        (200, {}, {"count": 3, "next": "http://x/?page=2", "results": [WORKLOAD, WORKLOAD]}),
        (200, {}, {"count": 3, "next": None, "results": [WORKLOAD]}),
    ]

    assert len(client_for(server).list(status="PENDING", page_size=2)) == 3
    assert [r["path"] for r in server.requests] == [
        "/api/v1/workloads?page=1&page_size=2&status=PENDING",
        "/api/v1/workloads?page=2&page_size=2&status=PENDING",
    ]


def test_a_closed_port_is_a_connection_failure_naming_the_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when the block ends: nothing listens there
    client = Client(f"http://127.0.0.1:{port}", "ca_test", retries=1, backoff=0.01)

    with pytest.raises(ConnectionFailed) as raised:
        client.get(WORKLOAD["id"])

    assert str(raised.value) == f"cannot reach the API at http://127.0.0.1:{port} (connection refused)"


def test_the_url_and_key_come_from_the_environment(server, monkeypatch):
    monkeypatch.setenv("ARBITRAGE_API_URL", server.url + "/")
    monkeypatch.setenv("ARBITRAGE_API_KEY", "ca_from_env")
    server.answers = [(200, {}, {"month": "2026-12"})]

    assert Client().usage("2026-12") == {"month": "2026-12"}
    assert server.requests[0]["path"] == "/api/v1/billing/summary?month=2026-12"
    assert server.requests[0]["headers"]["Authorization"] == "Bearer ca_from_env"


def test_without_a_key_or_with_a_bad_url_nothing_is_sent(server, monkeypatch):
    monkeypatch.delenv("ARBITRAGE_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="ARBITRAGE_API_KEY"):
        Client(server.url).get(WORKLOAD["id"])
    with pytest.raises(ConfigurationError, match="http://"):
        Client("127.0.0.1:8000", "ca_x")
    assert server.requests == []
