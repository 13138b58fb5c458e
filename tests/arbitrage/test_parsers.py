"""Request bodies are read as JSON only when their Content-Type says JSON."""

import pytest

from tests.errors import assert_error
from tests.factories import WorkloadFactory
from workloads.models import Workload

URL = "/api/v1/workloads"
BODY = b'{"name": "trainer", "requirements": {"vcpu": 4, "memory_gb": 16}}'


@pytest.mark.parametrize(
    "content_type",
    ["*/*", "application/*", "*/json", "text/plain", "text/json", "application/jsonx", "application/+json", ""],
)
def test_a_body_not_named_json_is_a_415_and_stores_nothing(api, content_type):
    response = api.generic("POST", URL, BODY, content_type=content_type)
    error = assert_error(response, 415, "unsupported_media_type")
    assert "Content-Type: application/json" in error["message"]
    assert not Workload.objects.exists()


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/merge-patch+json"],
)
def test_json_and_json_suffixed_media_types_are_read(api, content_type):
    response = api.generic("POST", URL, BODY, content_type=content_type)
    assert response.status_code == 201, response.content
    assert Workload.objects.get().name == "trainer"


def test_an_empty_body_is_read_whatever_its_content_type(api, customer):
    workload = WorkloadFactory(customer=customer)
    response = api.generic("POST", f"{URL}/{workload.id}/terminate", b"", content_type="*/*")
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "STOPPING"
