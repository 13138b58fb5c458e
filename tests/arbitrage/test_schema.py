"""The OpenAPI schema documents the statuses and bodies the API really answers."""

import pytest
from rest_framework.test import APIClient

from tests.errors import assert_error
from tests.factories import WorkloadFactory


@pytest.fixture
def schema(db) -> dict:
    response = APIClient().get("/api/schema/?format=json")
    assert response.status_code == 200
    return response.json()


def responses(schema, path, method) -> dict:
    return schema["paths"][path][method]["responses"]


def ref(response: dict, media_type: str = "application/json") -> str:
    return response["content"][media_type]["schema"]["$ref"]


def test_every_operation_documents_the_shared_errors_with_the_error_body(schema):
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            documented = operation["responses"]
            for status in ("400", "401", "406", "429"):
                assert ref(documented[status]) == "#/components/schemas/Error", (method, path, status)
            assert "Retry-After" in documented["429"]["headers"]
            if method == "post":
                assert {"413", "415"} <= set(documented), (method, path)
            if "{" in path:
                assert "404" in documented, (method, path)


def test_the_error_component_is_the_api_error_shape(schema):
    components = schema["components"]["schemas"]
    assert components["Error"]["required"] == ["error"]
    assert set(components["ErrorDetail"]["required"]) == {"status", "code", "message"}


@pytest.mark.parametrize(
    ("path", "component"),
    [
        ("/api/v1/workloads/{workload_id}/storage/objects", "PaginatedStorageObjectList"),
        ("/api/v1/workloads/{workload_id}/storage/checkpoints", "PaginatedCheckpointList"),
        ("/api/v1/workloads", "PaginatedWorkloadList"),
        ("/api/v1/placement/offers", "PaginatedOfferList"),
    ],
)
def test_lists_are_documented_as_paginated_envelopes_with_an_invalid_page_404(schema, path, component):
    documented = responses(schema, path, "get")
    assert ref(documented["200"]) == f"#/components/schemas/{component}"
    assert {"count", "next", "previous", "results"} <= set(schema["components"]["schemas"][component]["properties"])
    assert "404" in documented


def test_the_view_specific_errors_are_documented(schema):
    assert {"402", "422"} <= set(responses(schema, "/api/v1/workloads", "post"))
    assert "409" in responses(schema, "/api/v1/workloads/{workload_id}/terminate", "post")
    assert "422" in responses(schema, "/api/v1/placement/quote", "post")


def test_request_bodies_refuse_unknown_keys_in_the_schema_too(schema):
    assert schema["components"]["schemas"]["WorkloadCreateRequest"]["additionalProperties"] is False


def test_a_page_past_the_end_is_the_documented_404(api):
    assert_error(api.get("/api/v1/workloads?page=9"), 404, "not_found")


@pytest.mark.parametrize("page_size", ["0", "-3", "abc", "1.5", "9" * 5000])
def test_a_bad_page_size_is_a_400_naming_it(api, page_size):
    error = assert_error(api.get(f"/api/v1/workloads?page_size={page_size}"), 400, "invalid")
    assert list(error["fields"]) == ["page_size"]


def test_a_large_page_size_is_taken_as_the_most_there_is(api, customer):
    WorkloadFactory(customer=customer)
    assert api.get("/api/v1/workloads?page_size=100000").json()["count"] == 1


def test_a_repeated_query_parameter_is_a_400_naming_it(api):
    error = assert_error(api.get("/api/v1/workloads?page_size=1&page_size=2"), 400, "invalid")
    assert error["fields"] == {"page_size": ["Give this parameter once."]}
