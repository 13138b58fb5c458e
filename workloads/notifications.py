"""Customer notifications: stored always, delivered to the webhook with an HMAC signature.

The body is the notification's JSON payload; the header
``X-Arbitrage-Signature: sha256=<hex>`` is HMAC-SHA256 of the exact body bytes
with the customer's webhook secret, so the receiver can check it came from us.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any
from uuid import UUID

from celery import current_app
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import Customer
from workloads.models import DeliveryStatus, Notification, NotificationType, Workload, WorkloadInstance

SIGNATURE_HEADER = "X-Arbitrage-Signature"
EVENT_HEADER = "X-Arbitrage-Event"
DELIVERY_TIMEOUT_SECONDS = 10
MAX_DELIVERY_ATTEMPTS = 8
DELIVER_TASK = "workloads.notification_deliver"  # workloads/tasks.py


class WebhookDeliveryError(Exception):
    """The receiver did not take the notification this time (network error, 5xx, 429): retry later."""


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# --- payloads: one builder per notification type ------------------------------------------
# Every payload carries "type" and "customerId"; those about a workload also "workloadId".


def _about(type: str, *, customer_id: UUID | str, workload_id: UUID | str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"type": type, "customerId": str(customer_id)}
    if workload_id is not None:
        payload["workloadId"] = str(workload_id)
    return payload


def _pool(*, provider: str, region: str, instance_type: str) -> dict[str, str]:
    return {"provider": provider, "region": region, "instanceType": instance_type}


def _placed(placement: dict[str, Any]) -> dict[str, str]:
    return _pool(provider=placement["provider"], region=placement["region"], instance_type=placement["instance_type"])


def workload_ready_payload(*, workload: Workload, placement: dict[str, Any]) -> dict[str, Any]:
    """WORKLOAD_READY: where it runs and at what price; ``placement`` is provision-cloud-resources' result."""
    return {
        **_about(NotificationType.WORKLOAD_READY, customer_id=workload.customer_id, workload_id=workload.id),
        "endpoint": workload.endpoint,
        **_placed(placement),
        "estimatedCostPerHour": placement["spot_price"],
    }


def workload_failed_payload(*, workload: Workload, failed_step: str, reason: str) -> dict[str, Any]:
    return {
        **_about(NotificationType.WORKLOAD_FAILED, customer_id=workload.customer_id, workload_id=workload.id),
        "failedStep": failed_step,
        "reason": reason,
    }


def workload_interrupted_payload(
    *, workload: Workload, signal: str, instance: WorkloadInstance | None
) -> dict[str, Any]:
    return {
        **_about(NotificationType.WORKLOAD_INTERRUPTED, customer_id=workload.customer_id, workload_id=workload.id),
        "signal": signal,
        "provider": instance.provider if instance else None,
        "region": instance.region if instance else None,
    }


def workload_migrated_payload(
    *, workload: Workload, reason: str, old: WorkloadInstance | None, placement: dict[str, Any]
) -> dict[str, Any]:
    """WORKLOAD_MIGRATED: from the old instance's pool to the new placement."""
    return {
        **_about(NotificationType.WORKLOAD_MIGRATED, customer_id=workload.customer_id, workload_id=workload.id),
        "endpoint": workload.endpoint,
        "reason": reason,
        "from": _pool(provider=old.provider, region=old.region, instance_type=old.instance_type) if old else None,
        "to": _pool(
            provider=placement["provider"], region=placement["region"], instance_type=placement["instance_type"]
        ),
        "estimatedCostPerHour": placement["spot_price"],
    }


def workload_waiting_payload(*, workload: Workload, next_attempt_at: datetime) -> dict[str, Any]:
    """WORKLOAD_WAITING: no pool has capacity now; it waits and tries again (it is not failed)."""
    return {
        **_about(NotificationType.WORKLOAD_WAITING, customer_id=workload.customer_id, workload_id=workload.id),
        "reason": "waiting_for_capacity",
        "nextAttemptAt": next_attempt_at.isoformat(),
    }


def budget_exceeded_payload(
    *, customer: Customer, month: str, spend: str, budget: str, currency: str, message: str
) -> dict[str, Any]:
    return {
        **_about(NotificationType.BUDGET_EXCEEDED, customer_id=customer.id),
        "month": month,
        "spend": spend,
        "budget": budget,
        "currency": currency,
        "message": message,
    }


# --- storing and delivering ---------------------------------------------------------------


def notification_create(
    *,
    workload: Workload | None = None,
    type: str,
    payload: dict[str, Any],
    dedupe_key: str = "",
    customer: Customer | None = None,
    first_time: bool = False,
) -> Notification:
    """Store a notification (once per ``dedupe_key``) and deliver it after commit.

    About a workload: pass ``workload``, with its row locked by the caller's transaction.
    About the customer's account (no workload, e.g. BUDGET_EXCEEDED): pass ``customer``
    instead; it is stored once per customer, type and ``dedupe_key``. ``first_time``: the
    caller knows none is stored yet for this ``dedupe_key`` (a step's first record, keyed by its
    run), so there is nothing to read first.
    """
    if workload is not None:
        customer = workload.customer
        lookup: dict[str, Any] = {"workload": workload, "type": type, "dedupe_key": dedupe_key}
    elif customer is not None:
        lookup = {"customer": customer, "workload": None, "type": type, "dedupe_key": dedupe_key}
    else:
        raise ValueError("notification_create needs a workload or a customer")
    status = DeliveryStatus.PENDING if customer.webhook_url else DeliveryStatus.NO_WEBHOOK
    defaults = {"customer": customer, "payload": payload, "delivery_status": status}
    if workload is not None:
        # Every caller holds the workload row's lock (select_for_update), so no other writer inserts
        # this notification between the read and the insert: neither needs a savepoint.
        notification = None if first_time else Notification.objects.filter(**lookup).first()
        created = notification is None
        if notification is None:
            notification = Notification.objects.create(**lookup, **defaults)
    else:
        try:
            notification, created = Notification.objects.get_or_create(**lookup, defaults=defaults)
        except IntegrityError:
            return Notification.objects.get(**lookup)
    if created and status == DeliveryStatus.PENDING:
        # By name: the tasks module imports this one.
        transaction.on_commit(lambda: current_app.send_task(DELIVER_TASK, args=(str(notification.id),)))
    return notification


def notification_deliver(*, notification_id: UUID | str) -> Notification:
    """POST the notification to the customer's webhook; raise ``WebhookDeliveryError`` to be retried."""
    notification = Notification.objects.select_related("customer").get(id=notification_id)
    if notification.delivery_status != DeliveryStatus.PENDING:
        return notification
    customer = notification.customer
    body = json.dumps(notification.payload, separators=(",", ":"), sort_keys=True).encode()
    request = urllib.request.Request(
        customer.webhook_url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "compute-arbitrage-webhooks/1",
            EVENT_HEADER: notification.type,
            "X-Arbitrage-Delivery": str(notification.id),
            SIGNATURE_HEADER: sign(customer.webhook_secret, body),
        },
    )
    Notification.objects.filter(pk=notification.pk).update(attempts=notification.attempts + 1)
    try:
        with urllib.request.urlopen(request, timeout=DELIVERY_TIMEOUT_SECONDS) as response:
            code = response.status
    except urllib.error.HTTPError as error:
        code = error.code
        if code == 429 or code >= 500:
            _record_error(notification, f"HTTP {code}", code)
            raise WebhookDeliveryError(f"HTTP {code}") from None
        _record_error(notification, f"HTTP {code}: the receiver refused it", code, final=True)
        notification.refresh_from_db()
        return notification
    except (urllib.error.URLError, OSError) as error:
        reason = str(getattr(error, "reason", error))
        _record_error(notification, reason, None)
        raise WebhookDeliveryError(reason) from None
    Notification.objects.filter(pk=notification.pk).update(
        delivery_status=DeliveryStatus.DELIVERED, delivered_at=timezone.now(), last_status_code=code, last_error=""
    )
    notification.refresh_from_db()
    return notification


def notification_give_up(*, notification_id: UUID | str, error: str) -> None:
    Notification.objects.filter(id=notification_id, delivery_status=DeliveryStatus.PENDING).update(
        delivery_status=DeliveryStatus.FAILED, last_error=f"gave up after retries: {error}"
    )


def _record_error(notification: Notification, error: str, code: int | None, *, final: bool = False) -> None:
    fields: dict[str, Any] = {"last_error": error, "last_status_code": code}
    if final:
        fields["delivery_status"] = DeliveryStatus.FAILED
    Notification.objects.filter(pk=notification.pk).update(**fields)
