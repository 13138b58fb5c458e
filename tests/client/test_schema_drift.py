"""The client and the API cannot drift apart: every call it makes is checked against the OpenAPI schema.

For each operation in ``arbitrage_client.OPERATIONS``: the path and method exist, every query
parameter it sends is documented, every field of the body it sends is a property of the request
schema, and every field it reads (its response TypedDict, nested ones too) is a property of the
answer's schema. The logs operations are checked in test_cli_logs.py.
"""

from __future__ import annotations

import types
import typing
from typing import Any

import pytest
from rest_framework.test import APIClient

from arbitrage_client import OPERATIONS, Operation

LOGS = {"logs", "follow"}


@pytest.fixture(scope="module")
def schema(django_db_setup, django_db_blocker) -> dict:
    with django_db_blocker.unblock():
        response = APIClient().get("/api/schema/?format=json")
    assert response.status_code == 200
    return response.json()


def resolve(schema: dict, node: dict) -> dict:
    """A schema object with its ``$ref`` / single ``allOf`` followed."""
    while True:
        if "$ref" in node:
            node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
        elif len(node.get("allOf") or []) == 1:
            node = node["allOf"][0]
        else:
            return node


def _typed_dict(annotation: Any) -> type | None:
    """The TypedDict in ``X``, ``X | None``, ``list[X]`` (or None)."""
    if typing.is_typeddict(annotation):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        for arg in typing.get_args(annotation):
            if (found := _typed_dict(arg)) is not None:
                return found
    return None


def drift(schema: dict, shape: type, node: dict, where: str) -> list[str]:
    """Fields of the TypedDict ``shape`` that the schema object ``node`` does not have (recursively)."""
    node = resolve(schema, node)
    properties = node.get("properties") or {}
    missing = []
    for name, annotation in typing.get_type_hints(shape).items():
        if name not in properties:
            missing.append(f"{where}.{name}")
            continue
        inner, sub = annotation, resolve(schema, properties[name])
        if typing.get_origin(annotation) is list:
            inner, sub = typing.get_args(annotation)[0], resolve(schema, sub.get("items") or {})
        if (nested := _typed_dict(inner)) is not None:
            missing += drift(schema, nested, sub, f"{where}.{name}")
    return missing


def operation_drift(schema: dict, operation: Operation) -> list[str]:
    """What ``operation`` sends or reads that the schema does not document; [] when they agree."""
    documented = schema["paths"].get(operation.path, {}).get(operation.method.lower())
    if documented is None:
        return [f"{operation.method} {operation.path} is not in the schema"]
    problems = []
    parameters = {p["name"] for p in documented.get("parameters") or [] if p["in"] == "query"}
    problems += [f"query parameter {name}" for name in operation.query if name not in parameters]
    if operation.request is not None:
        body = (documented.get("requestBody") or {}).get("content", {}).get("application/json")
        if body is None:
            problems.append("a JSON request body")
        else:
            problems += drift(schema, operation.request, body["schema"], "request")
    if operation.response is not None:
        success = next(
            (documented["responses"][s] for s in ("200", "201", "202") if s in documented["responses"]), None
        )
        content = (success or {}).get("content", {}).get("application/json")
        if content is None:
            problems.append("a JSON success answer")
        else:
            problems += drift(schema, operation.response, content["schema"], "answer")
    return problems


@pytest.mark.parametrize("name", sorted(set(OPERATIONS) - LOGS))
def test_every_call_the_client_makes_is_in_the_schema_with_the_fields_it_sends_and_reads(schema, name):
    assert operation_drift(schema, OPERATIONS[name]) == []


def test_the_drift_check_finds_a_field_the_api_does_not_have(schema):
    class Renamed(typing.TypedDict):
        vcpus: int

    bent = Operation("POST", "/api/v1/placement/quote", None, None, ("sort",))
    assert operation_drift(schema, bent) == ["query parameter sort"]
    assert drift(schema, Renamed, {"$ref": "#/components/schemas/RequirementsRequest"}, "request") == ["request.vcpus"]
    assert operation_drift(schema, Operation("GET", "/api/v1/workload", None, None)) == [
        "GET /api/v1/workload is not in the schema"
    ]
