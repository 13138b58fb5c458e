"""Checkpoints through the workload agent's stdlib client, over real HTTP, on both backends."""

from __future__ import annotations

import pytest

from accounts.tokens import agent_token_for
from agent.checkpoint import StorageClient, StorageClientError, split_chunks
from storage.keys import full_key
from storage.models import CheckpointStatus, WorkloadCheckpoint
from tests.storage.conftest import storage_workload


@pytest.fixture(params=["embedded", "s3"])
def backend(request, settings, live_server):
    settings.PUBLIC_API_URL = live_server.url
    fixture = request.getfixturevalue(request.param)
    return fixture.backend if request.param == "s3" else fixture


@pytest.fixture
def client(backend, customer, live_server):
    workload = storage_workload(customer)
    env = {"ARBITRAGE_API_URL": live_server.url, "WORKLOAD_AGENT_TOKEN": agent_token_for(workload.id)}
    return StorageClient.from_env(env)


@pytest.mark.django_db(transaction=True)
def test_checkpoint_round_trip_and_a_corrupt_latest_is_passed_over(client, backend):
    first = client.save_checkpoint(b"first state, epoch 1", chunk_bytes=8, metadata={"epoch": 1})
    assert first["status"] == "COMPLETE"
    assert first["chunk_count"] == 3
    second = client.save_checkpoint(b"second state, epoch 2", chunk_bytes=8, metadata={"epoch": 2})

    latest = client.latest_checkpoint()
    assert latest["checkpoint_id"] == second["checkpoint_id"]
    assert latest["manifest"]["metadata"] == {"epoch": 2}
    assert [c["name"] for c in latest["chunks"]] == ["data/chunk-001.bin", "data/chunk-002.bin", "data/chunk-003.bin"]
    assert client.restore_latest() == b"second state, epoch 2"
    prefix = f"checkpoints/{second['checkpoint_id']}/"
    keys = {o["key"] for o in client.objects(prefix)}
    assert keys == {prefix + "manifest.json", *(prefix + c["name"] for c in latest["chunks"])}

    # Corrupt one chunk in the backend (same size, other bytes).
    backend.write(full_key(client.workload_id, prefix + "data/chunk-002.bin"), b"XXXXXXXX", content_type="x/y")

    latest = client.latest_checkpoint()
    assert latest["checkpoint_id"] == first["checkpoint_id"]
    assert client.restore_latest() == b"first state, epoch 1"
    statuses = {c["checkpoint_id"]: c["status"] for c in client.list_checkpoints()}
    assert statuses == {first["checkpoint_id"]: "COMPLETE", second["checkpoint_id"]: "CORRUPT"}


@pytest.mark.django_db(transaction=True)
def test_an_incomplete_checkpoint_is_refused_and_never_latest(client, backend):
    from agent.checkpoint import transfer

    good = client.save_checkpoint([b"only"])
    chunks = split_chunks(b"0123456789abcdef", 8)
    begun = client.begin_checkpoint(chunks)
    transfer(begun["chunks"][0]["upload"], chunks[0])  # the second chunk never arrives
    with pytest.raises(StorageClientError) as refused:
        client.complete_checkpoint(begun["checkpoint_id"])
    assert refused.value.status == 409
    assert "data/chunk-002.bin is missing" in str(refused.value)

    # A chunk with other bytes than the manifest says is refused the same way.
    transfer(begun["chunks"][1]["upload"], b"ZZZZZZZZ")
    with pytest.raises(StorageClientError, match="does not match its SHA-256"):
        client.complete_checkpoint(begun["checkpoint_id"])

    assert client.latest_checkpoint()["checkpoint_id"] == good["checkpoint_id"]
    assert WorkloadCheckpoint.objects.get(checkpoint_id=begun["checkpoint_id"]).status == CheckpointStatus.PENDING


@pytest.mark.django_db(transaction=True)
def test_no_checkpoint_yet(client):
    assert client.latest_checkpoint() is None
    assert client.restore_latest() is None


@pytest.mark.django_db(transaction=True)
def test_the_agent_uploads_an_object_once_per_url_on_both_backends(client, backend):
    data = b"x,y\n1,2\n"
    stored = client.upload("artifacts/results/out.csv", data, content_type="text/csv")
    assert stored["size_bytes"] == len(data)
    assert client.download("artifacts/results/out.csv") == data
    # Completing it again, as a replaying client would, is refused.
    with pytest.raises(StorageClientError) as again:
        client._api("POST", "uploads/complete", {"key": "artifacts/results/out.csv"})
    assert again.value.status == 409
    assert again.value.body["error"]["code"] == "upload_not_pending"
    assert [o["key"] for o in client.objects("artifacts/")] == ["artifacts/results/out.csv"]
