import ipaddress
import socket

import pytest
from django.core.cache import caches
from rest_framework.test import APIClient

from tests.factories import customer_with_key


class OutsideNetworkAccess(OSError):
    """A test tried to reach beyond loopback: every cloud, price API and webhook here is local."""


def _loopback_only(connect):
    def guarded(sock, address, *args):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                ip = ipaddress.ip_address(address[0].split("%")[0])
            except ValueError:
                ip = None  # a name: resolved by the caller before it connects, so checked then
            if ip is not None and not (ip.is_loopback or ip.is_unspecified):
                raise OutsideNetworkAccess(f"a test tried to connect to {address[0]} (only loopback is allowed)")
        return connect(sock, address, *args)

    return guarded


@pytest.fixture(autouse=True, scope="session")
def no_network_beyond_loopback():
    """Connections from the test process go to 127.0.0.0/8 or ::1 only."""
    original = socket.socket.connect, socket.socket.connect_ex
    socket.socket.connect = _loopback_only(original[0])
    socket.socket.connect_ex = _loopback_only(original[1])
    yield
    socket.socket.connect, socket.socket.connect_ex = original


@pytest.fixture(autouse=True)
def clean_routing_kv():
    caches["routing"].clear()
    yield
    caches["routing"].clear()


@pytest.fixture(autouse=True)
def clean_throttle_counters():
    """Every test starts with no request counted against any rate limit."""
    caches["throttle"].clear()
    yield
    caches["throttle"].clear()


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


@pytest.fixture
def catalog(transactional_db):
    """The bundled price catalog, loaded into the test database."""
    from placement.services import catalog_load_snapshot

    catalog_load_snapshot()


@pytest.fixture
def local_cloud_clean():
    """No faults configured, and every local instance stopped when the test ends."""
    from placement.clouds import local

    local.faults_clear()
    yield local
    local.faults_clear()
    local.terminate_all()  # every instance, and the fleet host if a test started one


@pytest.fixture
def worker_factory(transactional_db, local_cloud_clean):
    """Start real Celery workers on the test database: ``worker_factory(env={...})``."""
    from tests.live import Worker, purge_broker

    purge_broker()
    workers: list[Worker] = []

    def start(**kwargs) -> Worker:
        env = {**FAST_CLOCK, **kwargs.pop("env", {})}
        worker = Worker(env=env, name=f"w{len(workers) + 1}", **kwargs).start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def worker(worker_factory):
    return worker_factory()


@pytest.fixture
def webhook_receiver():
    from tests.live import WebhookReceiver

    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


# Workflow delays shortened 20x for the worker processes: polls every 0.25 s,
# provisioning retries after 0.5 / 1 / 2 s, the wait timeouts after 15 s.
FAST_CLOCK = {"WORKFLOW_TIME_SCALE": "0.05", "LOCAL_CLOUD_BOOT_DELAY_MS": "500"}
