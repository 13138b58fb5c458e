"""Billing writes: exactly one usage record per instance segment, and the monthly budget's refusal."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal

from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import Customer
from billing.errors import BudgetExceeded
from billing.models import UsageRecord
from billing.money import CENTS, CURRENCY, SECONDS, seconds_between, segment_price
from billing.selectors import customer_monthly_summary
from workloads.models import NotificationType, WorkloadInstance
from workloads.notifications import budget_exceeded_payload, notification_create


def usage_record_create(*, instance: WorkloadInstance) -> UsageRecord:
    """Bill ``instance`` for the seconds it ran times the price it was bought at (idempotent).

    The record keeps the instance's market: an on-demand instance (a deadline's
    fallback) was bought at the on-demand price, which its ``spot_price`` holds,
    so it is billed at that price and claims no saving against on demand.
    """
    existing = UsageRecord.objects.filter(instance=instance).first()
    if existing is not None:
        return existing
    if instance.terminated_at is None:
        raise ValueError(f"instance {instance.pk} is still running; bill it when it stops")
    part = segment_price(
        seconds=seconds_between(instance.billed_until - min(instance.billed_from, instance.billed_until)),
        spot_price=Decimal(instance.spot_price),
        on_demand_price=None if instance.on_demand_price is None else Decimal(instance.on_demand_price),
    )
    record = UsageRecord(
        instance=instance,
        customer_id=instance.workload.customer_id,
        workload_id=instance.workload_id,
        provider=instance.provider,
        region=instance.region,
        instance_type=instance.instance_type,
        market=instance.market,
        started_at=min(instance.billed_from, instance.billed_until),
        ended_at=instance.billed_until,
        duration_seconds=part.seconds.quantize(SECONDS, ROUND_HALF_UP),
        duration_hours=part.hours,
        spot_price_per_hour=Decimal(instance.spot_price),
        on_demand_price_per_hour=None if instance.on_demand_price is None else Decimal(instance.on_demand_price),
        total_cost=part.cost,
        on_demand_cost=part.on_demand_cost if instance.on_demand_price is not None else None,
    )
    try:
        with transaction.atomic():
            record.save()
    except IntegrityError:  # a concurrent run recorded it first
        return UsageRecord.objects.get(instance=instance)
    return record


def customer_budget_enforce(*, customer: Customer, now: datetime | None = None) -> None:
    """Refuse new work once this month's spend (running instances included) has reached the budget.

    Raises ``BudgetExceeded`` (402) after storing a BUDGET_EXCEEDED notification for
    the customer, at most one per customer per month. No budget, no limit.
    """
    if customer.monthly_budget is None:
        return
    now = (now or timezone.now()).astimezone(UTC)
    summary = customer_monthly_summary(customer_id=customer.id, month=now.date(), now=now)
    budget = Decimal(customer.monthly_budget).quantize(CENTS)
    if summary.spend < budget:
        return
    message = (
        f"Monthly budget reached: spent {summary.spend} of {budget} {CURRENCY} in {summary.label}; "
        "raise the budget or wait for next month."
    )
    notification_create(
        customer=customer,
        type=NotificationType.BUDGET_EXCEEDED,
        payload=budget_exceeded_payload(
            customer=customer,
            month=summary.label,
            spend=str(summary.spend),
            budget=str(budget),
            currency=CURRENCY,
            message=message,
        ),
        dedupe_key=f"budget:{summary.label}",
    )
    raise BudgetExceeded(message, month=summary.label, spend=str(summary.spend), budget=str(budget), currency=CURRENCY)
