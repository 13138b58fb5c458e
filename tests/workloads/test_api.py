"""The workloads REST API as a customer sees it."""

import json

import pytest
from rest_framework.test import APIClient

from accounts.services import api_key_create, api_key_revoke
from tests.errors import assert_error
from tests.factories import WorkloadFactory
from workloads.models import Workload, WorkloadInstance, WorkloadStatus

S = WorkloadStatus
URL = "/api/v1/workloads"
VALID = {"name": "trainer", "requirements": {"vcpu": 4, "memory_gb": 16}}


def post(client, body, **extra):
    return client.post(URL, data=json.dumps(body), content_type="application/json", **extra)


# --- authentication -----------------------------------------------------------


def test_missing_key_is_401(db):
    response = APIClient().get(URL)
    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "header", ["Bearer ca_wrong", "Bearer", "Basic dXNlcjpwYXNz", "Token abc", "Bearer a b", "bearer"]
)
def test_wrong_or_malformed_key_is_401(db, header):
    assert_error(APIClient().get(URL, HTTP_AUTHORIZATION=header), 401)


def test_revoked_key_is_401(customer):
    api_key, raw_key = api_key_create(customer=customer, name="old")
    api_key_revoke(api_key=api_key)
    assert_error(APIClient().get(URL, HTTP_AUTHORIZATION=f"Bearer {raw_key}"), 401)


def test_only_a_hash_and_prefix_of_the_key_are_stored(customer):
    api_key, raw_key = api_key_create(customer=customer)
    api_key.refresh_from_db()
    stored = json.dumps({f.name: str(getattr(api_key, f.attname)) for f in api_key._meta.fields})
    assert raw_key not in stored
    assert raw_key.startswith(api_key.prefix)


# --- create -------------------------------------------------------------------


def test_create_stores_a_pending_workload_with_defaults_filled(api, customer):
    response = post(api, VALID)

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "PENDING"
    assert body["endpoint"] == f"{body['id']}.workloads.localhost"
    assert body["requirements"] == {
        "vcpu": 4,
        "memory_gb": 16.0,
        "gpu_count": 0,
        "gpu_type": None,
        "architecture": "x86_64",
        "providers": ["aws", "gcp", "azure"],
        "regions": [],
        "zones": [],
        "max_price_per_hour": None,
    }
    assert body["config"] == {
        "health_check_port": 8080,
        "access": "public",
        "storage": {"enabled": False, "quota_gb": 10, "retention_days": 30},
    }
    assert response["Location"] == f"/api/v1/workloads/{body['id']}"
    workload = Workload.objects.get(id=body["id"])
    assert workload.customer == customer
    assert workload.events.get().name == "created"


def test_create_accepts_a_full_request(api, settings):
    settings.LOCAL_CLOUD_ALLOW_COMMANDS = True  # the operator runs customer commands in their sandbox
    body = {
        "name": "gpu job",
        "requirements": {
            "vcpu": 8,
            "memory_gb": 61.5,
            "gpu_count": 1,
            "gpu_type": "A10G",
            "architecture": "x86_64",
            "providers": ["aws", "gcp"],
            "regions": ["us-east-1", "europe-west4"],
            "max_price_per_hour": "1.25",
        },
        "config": {
            "image_id": "ghcr.io/acme/trainer:1.2",
            "command": ["python", "train.py"],
            "env": {"EPOCHS": "3"},
            "health_check_port": 9000,
            "storage": {"enabled": True, "quota_gb": 50, "retention_days": 7},
        },
        "recovery_policy": "terminate",
    }
    response = post(api, body)
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["requirements"]["max_price_per_hour"] == "1.250000"
    assert created["config"]["storage"] == {"enabled": True, "quota_gb": 50, "retention_days": 7}
    assert created["recovery_policy"] == "terminate"


def _with(path: str, value):
    """VALID with one dotted path set to value (or removed with ...)."""
    body = json.loads(json.dumps(VALID))
    *parents, leaf = path.split(".")
    node = body
    for key in parents:
        node = node.setdefault(key, {})
    if value is ...:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return body


BAD_BODIES = [
    ("name", _with("name", ...)),
    ("name", _with("name", "")),
    ("name", _with("name", "   ")),
    ("name", _with("name", 42)),
    ("name", _with("name", "x" * 201)),
    ("name", _with("name", "bad\nname")),
    ("requirements", _with("requirements", ...)),
    ("requirements", _with("requirements", "4 cpus")),
    ("requirements", _with("requirements", [1, 2])),
    ("requirements.vcpu", _with("requirements.vcpu", ...)),
    ("requirements.vcpu", _with("requirements.vcpu", "4")),
    ("requirements.vcpu", _with("requirements.vcpu", True)),
    ("requirements.vcpu", _with("requirements.vcpu", 2.5)),
    ("requirements.vcpu", _with("requirements.vcpu", 0)),
    ("requirements.vcpu", _with("requirements.vcpu", -3)),
    ("requirements.vcpu", _with("requirements.vcpu", 10**9)),
    ("requirements.memory_gb", _with("requirements.memory_gb", -1)),
    ("requirements.memory_gb", _with("requirements.memory_gb", 1e12)),
    ("requirements.memory_gb", _with("requirements.memory_gb", "lots")),
    ("requirements.memory_gb", _with("requirements.memory_gb", None)),
    ("requirements.gpu_count", _with("requirements.gpu_count", 100)),
    ("requirements.gpu_count", _with("requirements.gpu_type", "A100")),
    ("requirements.gpu_type", _with("requirements.gpu_type", "GTX1080")),
    ("requirements.architecture", _with("requirements.architecture", "mips")),
    ("requirements.providers", _with("requirements.providers", [])),
    ("requirements.providers", _with("requirements.providers", "aws")),
    ("requirements.providers.0", _with("requirements.providers", ["oracle"])),
    ("requirements.regions.0", _with("requirements.regions", ["../etc"])),
    ("requirements.regions", _with("requirements.regions", ["us-east-1"] * 51)),
    ("requirements.max_price_per_hour", _with("requirements.max_price_per_hour", -1)),
    ("requirements.max_price_per_hour", _with("requirements.max_price_per_hour", "cheap")),
    ("requirements.max_price_per_hour", _with("requirements.max_price_per_hour", 10**7)),
    ("requirements.cpu", _with("requirements.cpu", 4)),
    ("config", _with("config", "none")),
    ("config.health_check_port", _with("config.health_check_port", 70000)),
    ("config.health_check_port", _with("config.health_check_port", "8080")),
    ("config.image_id", _with("config.image_id", "")),
    ("config.command", _with("config.command", "python train.py")),
    ("config.env", _with("config.env", {"BAD-NAME": "1"})),
    ("config.env", _with("config.env", {f"V{i}": "x" for i in range(101)})),
    ("config.env.A", _with("config.env", {"A": 1})),
    ("config.storage.quota_gb", _with("config.storage", {"enabled": True, "quota_gb": 0})),
    ("config.storage.quota_gb", _with("config.storage", {"enabled": True, "quota_gb": 10**9})),
    ("config.storage.enabled", _with("config.storage", {"enabled": "yes"})),
    ("config.storage.retention_days", _with("config.storage", {"retention_days": -1})),
    ("config.storage.checkpoint_size_gb", _with("config.storage", {"quota_gb": 10, "checkpoint_size_gb": 11})),
    ("config.storage.checkpoint_size_gb", _with("config.storage", {"checkpoint_size_gb": -1})),
    ("config.storage.bucket", _with("config.storage", {"bucket": "mine"})),
    ("config.ports", _with("config.ports", [80])),
    ("recovery_policy", _with("recovery_policy", "pray")),
    ("owner", _with("owner", "someone else")),
]


@pytest.mark.parametrize(("field", "body"), BAD_BODIES, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD_BODIES)])
def test_bad_input_is_a_400_naming_the_field_and_stores_nothing(api, field, body):
    error = assert_error(post(api, body), 400, "invalid")
    assert field in error["fields"], error
    assert error["message"].startswith(next(iter(error["fields"])))
    assert not Workload.objects.exists()


def test_a_command_is_refused_where_the_local_cloud_would_run_it_unsandboxed(api, settings):
    settings.CLOUD_BACKENDS = {"aws": "aws", "gcp": "local", "azure": "local"}
    error = assert_error(post(api, _with("config.command", ["sh", "-c", "cat /etc/passwd"])), 400, "invalid")

    assert "LOCAL_CLOUD_ALLOW_COMMANDS" in error["fields"]["config.command"][0]
    assert "azure, gcp run on its local cloud" in error["fields"]["config.command"][0]
    assert not Workload.objects.exists()


def test_a_command_is_accepted_where_no_provider_runs_on_the_local_cloud(api, settings):
    settings.CLOUD_BACKENDS = {"aws": "aws", "gcp": "gcp", "azure": "azure"}
    assert post(api, _with("config.command", ["python", "train.py"])).status_code == 201


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]", b"null", b'"text"', b"\xff\xfe"])
def test_a_body_that_is_not_a_json_object_is_a_400(api, raw):
    response = api.post(URL, data=raw, content_type="application/json")
    assert_error(response, 400)
    assert not Workload.objects.exists()


@pytest.mark.parametrize(
    "character",
    ["\x00", "\x1b", "\x7f", "\x85", "\x9b", "\u202e", "\u200b", "\u2066", "\ufeff", "\U000e0001"],
)
def test_a_name_with_a_control_or_format_character_is_a_400(api, character):
    error = assert_error(post(api, {**VALID, "name": f"train{character}er"}), 400, "invalid")
    assert list(error["fields"]) == ["name"]
    if character != "\x00":  # DRF's own validator answers NUL first
        assert f"control or format characters (found U+{ord(character):04X})" in error["message"]
    assert not Workload.objects.exists()


def test_a_name_in_any_script_is_taken(api):
    response = post(api, {**VALID, "name": "тренер 训练 مدرب"})
    assert response.status_code == 201, response.content
    assert response.json()["name"] == "тренер 训练 مدرب"


def test_a_form_body_is_refused_as_unsupported(api):
    response = api.post(URL, data="name=x", content_type="application/x-www-form-urlencoded")
    assert_error(response, 415, "unsupported_media_type")


def test_an_oversized_body_is_refused_before_it_is_read(api, settings):
    body = _with("config.env", {"BIG": "x" * 4000})
    body["padding"] = "x" * (settings.API_MAX_BODY_BYTES + 1)
    assert_error(post(api, body), 413, "request_too_large")
    assert not Workload.objects.exists()


# --- idempotency --------------------------------------------------------------


def test_a_retried_create_with_the_same_idempotency_key_returns_the_first_answer(api):
    first = post(api, VALID, HTTP_IDEMPOTENCY_KEY="order-7")
    second = post(api, VALID, HTTP_IDEMPOTENCY_KEY="order-7")

    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second["Idempotent-Replayed"] == "true"
    assert Workload.objects.count() == 1


def test_the_same_idempotency_key_with_another_request_is_refused(api):
    post(api, VALID, HTTP_IDEMPOTENCY_KEY="order-8")
    response = post(api, _with("name", "different"), HTTP_IDEMPOTENCY_KEY="order-8")
    assert_error(response, 422, "idempotency_key_reused")
    assert Workload.objects.count() == 1


def test_idempotency_keys_are_per_customer(api, other_api):
    assert post(api, VALID, HTTP_IDEMPOTENCY_KEY="shared").status_code == 201
    assert post(other_api, VALID, HTTP_IDEMPOTENCY_KEY="shared").status_code == 201
    assert Workload.objects.count() == 2


def test_a_malformed_idempotency_key_is_a_400(api):
    error = assert_error(post(api, VALID, HTTP_IDEMPOTENCY_KEY="x" * 300), 400)
    assert "Idempotency-Key" in error["fields"]


# --- batches ------------------------------------------------------------------

BATCH_URL = "/api/v1/workloads/batch"


def post_batch(client, items, **extra):
    return client.post(BATCH_URL, data=json.dumps({"workloads": items}), content_type="application/json", **extra)


def test_a_batch_stores_every_workload_in_order_each_with_its_provisioning_run(api):
    items = [{**VALID, "name": f"sweep-{n}", "config": {"env": {"LR": str(n)}}} for n in range(3)]
    response = post_batch(api, items)

    assert response.status_code == 201
    answered = response.json()["workloads"]
    assert [w["name"] for w in answered] == ["sweep-0", "sweep-1", "sweep-2"]
    stored = Workload.objects.filter(id__in=[w["id"] for w in answered])
    assert {w.status for w in stored} == {S.PENDING}
    assert sorted(w.config["env"]["LR"] for w in stored) == ["0", "1", "2"]
    assert all(w.workflow_runs.filter(kind="provision").count() == 1 for w in stored)


def test_one_bad_workload_in_a_batch_is_named_by_its_index_and_nothing_is_stored(api):
    items = [VALID, {**VALID, "requirements": {"vcpu": 0, "memory_gb": 4}}, VALID]
    error = assert_error(post_batch(api, items), 400, "invalid")
    assert "workloads.1.requirements.vcpu" in error["fields"]
    assert not Workload.objects.exists()


@pytest.mark.parametrize("count", [0, 501])
def test_a_batch_takes_1_to_500_workloads(api, settings, count):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1 << 20
    error = assert_error(post_batch(api, [VALID] * count), 400, "invalid")
    assert "workloads" in error["fields"]
    assert not Workload.objects.exists()


def test_a_retried_batch_answers_with_the_workloads_the_first_made(api):
    items = [{**VALID, "name": f"sweep-{n}"} for n in range(2)]
    first = post_batch(api, items, HTTP_IDEMPOTENCY_KEY="sweep-42")
    second = post_batch(api, items, HTTP_IDEMPOTENCY_KEY="sweep-42")

    assert first.status_code == second.status_code == 201
    assert second.json() == first.json() and second["Idempotent-Replayed"] == "true"
    assert Workload.objects.count() == 2
    other = post_batch(api, [{**VALID, "name": "changed"}, items[1]], HTTP_IDEMPOTENCY_KEY="sweep-42")
    assert_error(other, 422, "idempotency_key_reused")
    assert Workload.objects.count() == 2


# --- list and detail ----------------------------------------------------------


def test_list_shows_only_the_callers_workloads_filtered_by_status(api, customer):
    running = WorkloadFactory(customer=customer, status=S.RUNNING)
    WorkloadFactory(customer=customer, status=S.PENDING)
    WorkloadFactory(status=S.RUNNING)  # another customer's

    everything = api.get(URL).json()
    only_running = api.get(URL, {"status": "RUNNING"}).json()

    assert everything["count"] == 2
    assert [w["id"] for w in only_running["results"]] == [str(running.id)]


def test_list_is_paginated(api, customer):
    WorkloadFactory.create_batch(7, customer=customer)
    first = api.get(URL, {"page_size": 5}).json()
    second = api.get(URL, {"page_size": 5, "page": 2}).json()
    assert first["count"] == 7
    assert len(first["results"]) == 5 and len(second["results"]) == 2
    assert not {w["id"] for w in first["results"]} & {w["id"] for w in second["results"]}


@pytest.mark.parametrize(
    ("params", "status"), [({"status": "SLEEPING"}, 400), ({"color": "red"}, 400), ({"page": "99"}, 404)]
)
def test_list_with_bad_parameters_is_a_clear_error(api, params, status):
    assert_error(api.get(URL, params), status)


def test_detail_has_instances_and_the_event_timeline(api, customer, django_capture_on_commit_callbacks):
    from workloads.services import workload_transition

    workload = WorkloadFactory(customer=customer, status=S.PROVISIONING)
    WorkloadInstance.objects.create(
        workload=workload, provider="aws", region="us-east-1", instance_type="m7i.large", spot_price="0.0421"
    )
    workload_transition(workload_id=workload.id, transition="mark_ready", message="routing registered")

    body = api.get(f"{URL}/{workload.id}").json()

    assert body["status"] == "RUNNING"
    assert [i["instance_type"] for i in body["instances"]] == ["m7i.large"]
    assert body["instances"][0]["spot_price"] == "0.042100"
    assert [(e["name"], e["from_status"], e["to_status"]) for e in body["events"]] == [
        ("mark_ready", "PROVISIONING", "RUNNING")
    ]


def test_an_unknown_or_malformed_workload_id_is_a_json_404(api):
    assert_error(api.get(f"{URL}/00000000-0000-0000-0000-000000000000"), 404, "not_found")
    assert_error(api.get(f"{URL}/not-a-uuid"), 404, "not_found")


# --- terminate ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "event"), [(S.RUNNING, "user_terminate"), (S.PENDING, "cancel"), (S.PROVISIONING, "cancel")]
)
def test_terminate_moves_the_workload_to_stopping(api, customer, source, event):
    workload = WorkloadFactory(customer=customer, status=source)

    response = api.post(f"{URL}/{workload.id}/terminate")

    assert response.status_code == 202, response.content
    assert response.json()["status"] == "STOPPING"
    workload.refresh_from_db()
    assert workload.status == S.STOPPING
    assert workload.events.get().name == event


@pytest.mark.parametrize("source", [S.STOPPING, S.TERMINATED, S.FAILED, S.INTERRUPTED, S.UNHEALTHY])
def test_terminate_in_a_state_that_does_not_allow_it_is_a_409_with_the_state(api, customer, source):
    workload = WorkloadFactory(customer=customer, status=source)
    error = assert_error(api.post(f"{URL}/{workload.id}/terminate"), 409, "invalid_state")
    assert error["current_state"] == source
    workload.refresh_from_db()
    assert workload.status == source


# --- isolation between customers ----------------------------------------------


def test_another_customers_workload_is_invisible(api, other_api, customer):
    workload = WorkloadFactory(customer=customer, status=S.RUNNING)

    assert other_api.get(URL).json()["count"] == 0
    assert_error(other_api.get(f"{URL}/{workload.id}"), 404, "not_found")
    assert_error(other_api.post(f"{URL}/{workload.id}/terminate"), 404, "not_found")
    workload.refresh_from_db()
    assert workload.status == S.RUNNING


# --- docs ---------------------------------------------------------------------


def test_openapi_schema_and_swagger_ui_are_served(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert {"/api/v1/workloads", "/api/v1/workloads/{workload_id}", "/api/v1/workloads/{workload_id}/terminate"} <= set(
        paths
    )
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger-ui" in docs.content


def test_wrong_method_is_a_json_405(api):
    assert_error(api.delete(URL), 405, "method_not_allowed")


ODD_BODIES = [
    b'{"name": "x", "requirements": {"vcpu": 2, "memory_gb": NaN}}',
    b'{"name": "x", "requirements": {"vcpu": 2, "memory_gb": 1e400}}',
    b'{"name": "x", "requirements": {"vcpu": 2, "memory_gb": 4, "max_price_per_hour": 1e400}}',
    b'{"name": "x", "requirements": {"vcpu": 100000000000000000000000000000000, "memory_gb": 4}}',
    b'{"name": "\\u0000", "requirements": {"vcpu": 2, "memory_gb": 4}}',
    b'{"name": {"a": 1}, "requirements": {"vcpu": [2], "memory_gb": {}}}',
    b'{"name": "x", "requirements": {"vcpu": 2, "memory_gb": 4, "providers": [[["aws"]]]}}',
    b'{"name": "x", "requirements": {"vcpu": 2, "memory_gb": 4}, "config": {"env": ["A=1"]}}',
    b'{"name": "x", "requirements": {"vcpu": 2, "memory_gb": 4}, "config": {"storage": null}}',
    b'{"name": "x", "requirements": {"vcpu": 2, "memory_gb": 4}, "config": {"command": [null]}}',
    b"[" * 5000 + b"]" * 5000,
]


@pytest.mark.parametrize("raw", ODD_BODIES, ids=range(len(ODD_BODIES)))
def test_odd_json_is_a_clear_4xx_never_a_500(api, raw):
    response = api.post(URL, data=raw, content_type="application/json")
    assert 400 <= response.status_code < 500, response.content
    assert response.json()["error"]["message"]
    assert not Workload.objects.exists()
