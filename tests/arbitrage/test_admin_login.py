"""The admin's login: failed attempts per source address and username are limited."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

URL = "/admin/login/"


@pytest.fixture
def operator(db):
    return get_user_model().objects.create_superuser("ops", "ops@example.com", "right-horse-battery")


@pytest.fixture
def two_failures(settings):
    settings.ADMIN_LOGIN_FAILURE_RATE = (2, 10**9)  # a window that does not end during the test


def login(password: str, username: str = "ops", address: str = "127.0.0.1", client: Client | None = None):
    """What the admin's login form posts."""
    client = client or Client(REMOTE_ADDR=address)
    return client.post(URL, {"username": username, "password": password, "next": "/admin/"})


def test_wrong_passwords_past_the_limit_are_a_429_with_retry_after(operator, two_failures):
    for _ in range(2):
        response = login("wrong")
        assert response.status_code == 200
        assert b"Please enter the correct username and password" in response.content

    browser = Client()
    refused = login("right-horse-battery", client=browser)
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) >= 1
    assert b"Too many failed logins" in refused.content
    assert "_auth_user_id" not in browser.session


def test_the_limit_is_per_username_and_per_address(operator, two_failures):
    for _ in range(2):
        login("wrong")

    assert login("wrong", username="someone-else").status_code == 200
    assert login("right-horse-battery", address="10.0.0.9").status_code == 302


def test_the_username_is_counted_whatever_its_case_or_spaces(operator, two_failures):
    login("wrong", username="OPS")
    login("wrong", username=" ops ")
    assert login("right-horse-battery").status_code == 429


def test_a_good_login_within_the_limit_gets_in(operator, two_failures):
    login("wrong")
    response = login("right-horse-battery")
    assert response.status_code == 302
    assert response["Location"] == "/admin/"
