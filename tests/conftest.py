import pytest
from django.core.cache import caches
from rest_framework.test import APIClient

from tests.factories import customer_with_key


@pytest.fixture(autouse=True)
def clean_routing_kv():
    caches["routing"].clear()
    yield
    caches["routing"].clear()


@pytest.fixture
def customer_and_key(db):
    return customer_with_key()


@pytest.fixture
def customer(customer_and_key):
    return customer_and_key[0]


@pytest.fixture
def api(customer_and_key) -> APIClient:
    """An API client authenticated as ``customer``."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {customer_and_key[1]}")
    return client


@pytest.fixture
def other_api(db) -> APIClient:
    """An API client of a second, unrelated customer."""
    _, raw_key = customer_with_key(name="Other customer")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return client
