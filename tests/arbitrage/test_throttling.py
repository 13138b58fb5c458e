"""The API's rate limits: per credential, and failed authentication per source address."""

import pytest
from rest_framework.test import APIClient

from tests.errors import assert_error
from tests.factories import customer_with_key

URL = "/api/v1/workloads"
# Windows this long never end during a test, so no count resets half-way through one.
FOREVER = 10**9


def client(key: str | None = None, address: str = "127.0.0.1") -> APIClient:
    api = APIClient(REMOTE_ADDR=address)
    if key:
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return api


def assert_throttled(response) -> None:
    error = assert_error(response, 429, "throttled")
    assert int(response["Retry-After"]) >= 1
    assert "Expected available in" in error["message"]


@pytest.fixture
def small_failure_limit(settings):
    settings.API_AUTH_FAILURE_RATE = (3, FOREVER)


def test_wrong_keys_past_the_limit_are_a_429_with_retry_after(db, small_failure_limit):
    wrong = client("ca_not-a-key")
    for _ in range(3):
        assert_error(wrong.get(URL), 401)
    assert_throttled(wrong.get(URL))


def test_a_blocked_address_is_refused_even_with_a_good_key(db, small_failure_limit):
    _, key = customer_with_key()
    for _ in range(3):
        assert_error(client("ca_guess").get(URL), 401)

    assert_throttled(client(key).get(URL))
    assert client(key, address="10.0.0.2").get(URL).status_code == 200


def test_a_forwarded_for_header_does_not_change_the_counted_address(db, small_failure_limit):
    for index in range(3):
        assert_error(client("ca_guess").get(URL, HTTP_X_FORWARDED_FOR=f"10.9.9.{index}"), 401)
    assert_throttled(client("ca_guess").get(URL, HTTP_X_FORWARDED_FOR="10.9.9.200"))


def test_behind_trusted_proxies_the_forwarded_address_is_counted(db, settings, small_failure_limit):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    for _ in range(3):
        assert_error(client("ca_guess").get(URL, HTTP_X_FORWARDED_FOR="203.0.113.7"), 401)
    assert_throttled(client("ca_guess").get(URL, HTTP_X_FORWARDED_FOR="203.0.113.7"))
    assert_error(client("ca_guess").get(URL, HTTP_X_FORWARDED_FOR="203.0.113.8"), 401)


def test_a_missing_key_is_a_401_and_not_counted_as_a_failure(db, small_failure_limit):
    _, key = customer_with_key()
    for _ in range(5):
        assert_error(client().get(URL), 401)
    assert client(key).get(URL).status_code == 200


def test_an_agent_token_that_fails_is_counted_too(db, small_failure_limit):
    for _ in range(3):
        assert_error(client("wat_forged").post("/api/v1/agent/progress", {}, format="json"), 401)
    assert_throttled(client("wat_forged").post("/api/v1/agent/progress", {}, format="json"))


def test_one_key_past_its_sustained_rate_is_a_429_and_others_go_on(db, settings):
    settings.API_THROTTLE_RATE = (3, FOREVER)
    _, key = customer_with_key()
    _, other_key = customer_with_key(name="Other")
    for _ in range(3):
        assert client(key).get(URL).status_code == 200

    assert_throttled(client(key).get(URL))
    assert client(other_key).get(URL).status_code == 200


def test_the_schema_is_not_held_to_a_key_rate(db, settings):
    settings.API_THROTTLE_RATE = (1, FOREVER)
    for _ in range(3):
        assert client().get("/api/schema/").status_code == 200
