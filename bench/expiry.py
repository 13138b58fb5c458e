"""Storage expiry of N objects on a real S3 API server: batched (DeleteObjects) against one by one.

    .venv/bin/python bench/expiry.py                 # 20 000 objects, SQLite in a throwaway directory
    .venv/bin/python bench/expiry.py --objects 5000
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/expiry.py
                                                     # PostgreSQL, in a throwaway database beside that one

It starts moto's S3 server on loopback, points the storage settings at it, and
twice stores N expired objects (in the bucket and in the object index). Then it
times the product's expiry (``storage_expired_delete``: DeleteObjects with up to
1 000 keys a call, index rows removed after each confirmed batch) and the
one-by-one way (a DeleteObject call and an index delete per object), and checks
that both leave the bucket and the index empty. The last line is the headline:
``expiry ratio: <one-by-one time / batched time> (target > 20)``.
"""

from __future__ import annotations

import argparse
import time
from datetime import timedelta
from pathlib import Path

from throwaway import throwaway_database  # bench/ is the script's own directory

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "expiry-bench"


def setup(endpoint: str) -> tuple[str, callable]:
    """Settings pointed at a fresh database and the S3 server; returns a description and a clean-up."""
    return throwaway_database(
        "expiry",
        env={
            "STORAGE_BUCKET": BUCKET,
            "STORAGE_ENDPOINT_URL": endpoint,
            "STORAGE_REGION": "us-east-1",
            "STORAGE_ACCESS_KEY_ID": "bench",
            "STORAGE_SECRET_ACCESS_KEY": "bench-secret",
            "STORAGE_ADDRESSING_STYLE": "path",
        },
    )


def seed(backend, workload_id, n: int) -> None:
    """N expired objects, in the bucket and in the index (not timed).

    The objects go straight into the in-process S3 server's store: the same
    objects 16 parallel PUTs would make, in a fraction of the time.
    """
    from django.utils import timezone
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    from storage.keys import full_key
    from storage.models import WorkloadStorageObject

    keys = [f"artifacts/logs/{i:06d}.log" for i in range(n)]
    store = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    for key in keys:
        store.put_object(BUCKET, full_key(workload_id, key), b"x")
    listed = sum(1 for _ in backend.list_keys(f"workloads/{workload_id}/"))
    if listed != n:
        raise SystemExit(f"seeding: the S3 server lists {listed} objects, expected {n}")
    past = timezone.now() - timedelta(seconds=1)
    WorkloadStorageObject.objects.bulk_create(
        (WorkloadStorageObject(workload_id=workload_id, object_key=k, size_bytes=1, expires_at=past) for k in keys),
        batch_size=2000,
    )


def expire_one_by_one(backend) -> int:
    """The baseline: one DeleteObject call per object, its index row deleted right after."""
    from django.utils import timezone

    from storage.keys import full_key
    from storage.models import WorkloadStorageObject

    count = 0
    expired = WorkloadStorageObject.objects.filter(expires_at__lte=timezone.now()).order_by("id")
    for row_id, workload_id, key in expired.values_list("id", "workload_id", "object_key").iterator():
        backend.delete(full_key(workload_id, key))
        WorkloadStorageObject.objects.filter(id=row_id).delete()
        count += 1
    return count


def check_empty(backend, what: str) -> None:
    from storage.models import WorkloadStorageObject

    left_in_bucket = sum(1 for _ in backend.list_keys("workloads/"))
    left_in_index = WorkloadStorageObject.objects.count()
    if left_in_bucket or left_in_index:
        raise SystemExit(f"{what}: {left_in_bucket} objects left in the bucket, {left_in_index} in the index")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=20_000, help="objects expired in each run (default 20000)")
    args = parser.parse_args()

    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    description, cleanup = setup(f"http://{host}:{port}")
    try:
        from storage.backends import storage_backend
        from storage.services import storage_expired_delete, storage_initialize
        from tests.factories import WorkloadFactory

        backend = storage_backend()
        backend.client.create_bucket(Bucket=BUCKET)
        calls = {"DeleteObjects": 0, "DeleteObject": 0}

        def count(event_name: str, **kwargs) -> None:
            operation = event_name.rsplit(".", 1)[-1]
            if operation in calls:
                calls[operation] += 1

        backend.client.meta.events.register("before-call.s3", count)
        workload = WorkloadFactory()
        storage_initialize(workload_id=workload.id, quota_bytes=10**12, retention_days=1)
        print(f"database: {description}")
        print(f"S3 server: moto on http://{host}:{port}, {args.objects} objects per run")

        seed(backend, workload.id, args.objects)
        started = time.perf_counter()
        batched_count = storage_expired_delete()
        batched = time.perf_counter() - started
        check_empty(backend, "batched")
        print(f"batched:    {batched_count} objects in {batched:8.3f} s, {calls['DeleteObjects']} DeleteObjects calls")

        seed(backend, workload.id, args.objects)
        started = time.perf_counter()
        single_count = expire_one_by_one(backend)
        one_by_one = time.perf_counter() - started
        check_empty(backend, "one by one")
        print(f"one by one: {single_count} objects in {one_by_one:8.3f} s, {calls['DeleteObject']} DeleteObject calls")
        print(f"expiry ratio: {one_by_one / batched:.1f} (target > 20)")
    finally:
        cleanup()
        server.stop()


if __name__ == "__main__":
    main()
