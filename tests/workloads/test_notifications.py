"""Webhook notifications: signed, retried on failures worth retrying, stored either way."""

import hmac
import json
import threading
from hashlib import sha256
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import IntegrityError, transaction

from tests.factories import CustomerFactory, WorkloadFactory
from workloads.models import DeliveryStatus, Notification, NotificationType
from workloads.notifications import SIGNATURE_HEADER, WebhookDeliveryError, notification_create, notification_deliver


@pytest.fixture
def receiver():
    """Answers each POST with the next status in ``answers`` (204 when they run out)."""
    state = {"answers": [], "received": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state["received"].append((dict(self.headers), body))
            self.send_response(state["answers"].pop(0) if state["answers"] else 204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield state
    server.shutdown()
    server.server_close()


def ready_notification(customer, django_capture_on_commit_callbacks):
    workload = WorkloadFactory(customer=customer)
    with django_capture_on_commit_callbacks(execute=False):
        return notification_create(
            workload=workload, type=NotificationType.WORKLOAD_READY, payload={"type": "WORKLOAD_READY"}
        )


def test_delivery_is_signed_with_the_customers_secret(db, receiver, django_capture_on_commit_callbacks):
    customer = CustomerFactory(webhook_url=receiver["url"], webhook_secret="topsecret")
    notification = ready_notification(customer, django_capture_on_commit_callbacks)

    delivered = notification_deliver(notification_id=notification.id)

    assert delivered.delivery_status == DeliveryStatus.DELIVERED
    headers, body = receiver["received"][0]
    assert headers[SIGNATURE_HEADER] == "sha256=" + hmac.new(b"topsecret", body, sha256).hexdigest()
    assert json.loads(body) == {"type": "WORKLOAD_READY"}


@pytest.mark.parametrize("status", [500, 503, 429])
def test_a_failure_worth_retrying_raises_and_keeps_it_pending(db, receiver, status, django_capture_on_commit_callbacks):
    receiver["answers"] = [status]
    customer = CustomerFactory(webhook_url=receiver["url"], webhook_secret="k")
    notification = ready_notification(customer, django_capture_on_commit_callbacks)

    with pytest.raises(WebhookDeliveryError):
        notification_deliver(notification_id=notification.id)
    notification.refresh_from_db()
    assert (notification.delivery_status, notification.attempts, notification.last_status_code) == (
        DeliveryStatus.PENDING,
        1,
        status,
    )

    assert notification_deliver(notification_id=notification.id).delivery_status == DeliveryStatus.DELIVERED


def test_a_refusal_is_final(db, receiver, django_capture_on_commit_callbacks):
    receiver["answers"] = [410]
    customer = CustomerFactory(webhook_url=receiver["url"], webhook_secret="k")
    notification = ready_notification(customer, django_capture_on_commit_callbacks)

    assert notification_deliver(notification_id=notification.id).delivery_status == DeliveryStatus.FAILED


def test_an_unreachable_receiver_is_retried(db, django_capture_on_commit_callbacks):
    customer = CustomerFactory(webhook_url="http://127.0.0.1:9/nothing-listens", webhook_secret="k")
    notification = ready_notification(customer, django_capture_on_commit_callbacks)
    with pytest.raises(WebhookDeliveryError):
        notification_deliver(notification_id=notification.id)


def test_without_a_webhook_it_is_stored_and_nothing_is_sent(db, django_capture_on_commit_callbacks):
    customer = CustomerFactory(webhook_url="")
    workload = WorkloadFactory(customer=customer)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        notification = notification_create(workload=workload, type=NotificationType.WORKLOAD_READY, payload={})
    assert notification.delivery_status == DeliveryStatus.NO_WEBHOOK
    assert callbacks == []


def test_the_same_step_never_notifies_twice(db, django_capture_on_commit_callbacks):
    workload = WorkloadFactory()
    with django_capture_on_commit_callbacks(execute=False):
        first = notification_create(workload=workload, type=NotificationType.WORKLOAD_READY, payload={}, dedupe_key="r")
        again = notification_create(workload=workload, type=NotificationType.WORKLOAD_READY, payload={}, dedupe_key="r")
    assert first.id == again.id


@pytest.mark.django_db
def test_an_account_notification_is_stored_once_per_customer_type_and_key():
    customer = CustomerFactory()

    def budget_notice(month: str, n: int) -> Notification:
        return notification_create(
            customer=customer, type=NotificationType.BUDGET_EXCEEDED, payload={"n": n}, dedupe_key=f"budget:{month}"
        )

    first, again, later = budget_notice("2026-11", 1), budget_notice("2026-11", 2), budget_notice("2026-12", 3)

    assert again.pk == first.pk and later.pk != first.pk
    with pytest.raises(IntegrityError), transaction.atomic():  # the database holds the line too
        Notification.objects.create(
            customer=customer, type=NotificationType.BUDGET_EXCEEDED, dedupe_key="budget:2026-11"
        )
