"""Webhook notifications: signed, retried on failures worth retrying, stored either way."""

import hmac
import json
from hashlib import sha256

import pytest
from django.db import IntegrityError, transaction

from tests.factories import CustomerFactory, WorkloadFactory
from tests.live import WebhookReceiver
from workloads.models import DeliveryStatus, Notification, NotificationType
from workloads.notifications import SIGNATURE_HEADER, WebhookDeliveryError, notification_create, notification_deliver


@pytest.fixture
def receiver():
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


def ready_notification(customer, django_capture_on_commit_callbacks):
    workload = WorkloadFactory(customer=customer)
    with django_capture_on_commit_callbacks(execute=False):
        return notification_create(
            workload=workload, type=NotificationType.WORKLOAD_READY, payload={"type": "WORKLOAD_READY"}
        )


def test_delivery_is_signed_with_the_customers_secret(db, receiver, django_capture_on_commit_callbacks):
    customer = CustomerFactory(webhook_url=receiver.url, webhook_secret="topsecret")
    notification = ready_notification(customer, django_capture_on_commit_callbacks)

    delivered = notification_deliver(notification_id=notification.id)

    assert delivered.delivery_status == DeliveryStatus.DELIVERED
    headers, body = receiver.received[0]["headers"], receiver.received[0]["body"]
    assert headers[SIGNATURE_HEADER] == "sha256=" + hmac.new(b"topsecret", body, sha256).hexdigest()
    assert json.loads(body) == {"type": "WORKLOAD_READY"}


@pytest.mark.parametrize("status", [500, 503, 429])
def test_a_failure_worth_retrying_raises_and_keeps_it_pending(db, receiver, status, django_capture_on_commit_callbacks):
    receiver.answers[:] = [status]
    customer = CustomerFactory(webhook_url=receiver.url, webhook_secret="k")
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
    receiver.answers[:] = [410]
    customer = CustomerFactory(webhook_url=receiver.url, webhook_secret="k")
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


def test_every_payload_names_its_type_and_customer_and_a_workload_payload_its_workload(db):
    from tests.factories import WorkloadInstanceFactory
    from workloads import notifications as n

    instance = WorkloadInstanceFactory(provider="aws", region="us-east-1", instance_type="m6i.large")
    workload = instance.workload
    placement = {"provider": "gcp", "region": "europe-west4", "instance_type": "n2-standard-2", "spot_price": "0.02"}
    payloads = {
        NotificationType.WORKLOAD_READY: n.workload_ready_payload(workload=workload, placement=placement),
        NotificationType.WORKLOAD_FAILED: n.workload_failed_payload(workload=workload, failed_step="x", reason="y"),
        NotificationType.WORKLOAD_INTERRUPTED: n.workload_interrupted_payload(
            workload=workload, signal="cloud", instance=instance
        ),
        NotificationType.WORKLOAD_MIGRATED: n.workload_migrated_payload(
            workload=workload, reason="spot interruption", old=instance, placement=placement
        ),
    }
    for type, payload in payloads.items():
        assert payload["type"] == type
        assert payload["customerId"] == str(workload.customer_id)
        assert payload["workloadId"] == str(workload.id)
    migrated = payloads[NotificationType.WORKLOAD_MIGRATED]
    assert migrated["from"] == {"provider": "aws", "region": "us-east-1", "instanceType": "m6i.large"}
    assert migrated["to"] == {"provider": "gcp", "region": "europe-west4", "instanceType": "n2-standard-2"}
    budget = n.budget_exceeded_payload(
        customer=workload.customer, month="2026-12", spend="10.00", budget="10.00", currency="USD", message="m"
    )
    assert budget["type"] == NotificationType.BUDGET_EXCEEDED and "workloadId" not in budget
