"""Billing's answers to the workloads' signals (``workloads/signals.py``)."""

from __future__ import annotations

from typing import Any

from billing.services import customer_budget_enforce, usage_record_create


def on_workload_admission(sender: Any, *, customer: Any, **kwargs: Any) -> None:
    customer_budget_enforce(customer=customer)


def on_instance_released(sender: Any, *, instance: Any, **kwargs: Any) -> dict[str, str]:
    record = usage_record_create(instance=instance)
    return {
        "instance_id": instance.instance_id,
        "provider": record.provider,
        "region": record.region,
        "instanceType": record.instance_type,
        "market": record.market,
        "durationHours": str(record.duration_hours),
        "spotPricePerHour": str(record.spot_price_per_hour),
        "totalCost": str(record.total_cost),
    }
