"""Billing writes: exactly one usage record per instance segment."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from django.db import IntegrityError, transaction

from billing.models import UsageRecord
from workloads.models import WorkloadInstance

SECONDS_PER_HOUR = Decimal(3600)
MONEY = Decimal("0.000001")


def usage_record_create(*, instance: WorkloadInstance) -> UsageRecord:
    """Bill ``instance`` for the seconds it ran times the price it was bought at (idempotent)."""
    existing = UsageRecord.objects.filter(instance=instance).first()
    if existing is not None:
        return existing
    if instance.terminated_at is None:
        raise ValueError(f"instance {instance.pk} is still running; bill it when it stops")
    seconds = Decimal(str(max((instance.terminated_at - instance.created_at).total_seconds(), 0.0)))
    hours = seconds / SECONDS_PER_HOUR
    spot_price = Decimal(instance.spot_price)
    on_demand = Decimal(instance.on_demand_price) if instance.on_demand_price is not None else None
    record = UsageRecord(
        instance=instance,
        customer_id=instance.workload.customer_id,
        workload_id=instance.workload_id,
        provider=instance.provider,
        region=instance.region,
        instance_type=instance.instance_type,
        started_at=instance.created_at,
        ended_at=instance.terminated_at,
        duration_seconds=seconds.quantize(Decimal("0.001"), ROUND_HALF_UP),
        duration_hours=hours.quantize(MONEY, ROUND_HALF_UP),
        spot_price_per_hour=spot_price,
        on_demand_price_per_hour=on_demand,
        total_cost=(hours * spot_price).quantize(MONEY, ROUND_HALF_UP),
        on_demand_cost=(hours * on_demand).quantize(MONEY, ROUND_HALF_UP) if on_demand is not None else None,
    )
    try:
        with transaction.atomic():
            record.save()
    except IntegrityError:  # a concurrent run recorded it first
        return UsageRecord.objects.get(instance=instance)
    return record
