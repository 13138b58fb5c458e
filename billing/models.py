"""Usage records: one per instance segment, priced at what it was bought at (docs/architecture.md §11)."""

from __future__ import annotations

from django.db import models

from placement.clouds.base import Market
from workloads.models import MARKETS


class UsageRecord(models.Model):
    instance = models.OneToOneField("workloads.WorkloadInstance", on_delete=models.PROTECT, related_name="usage_record")
    customer = models.ForeignKey("accounts.Customer", on_delete=models.PROTECT, related_name="usage_records")
    workload = models.ForeignKey("workloads.Workload", on_delete=models.PROTECT, related_name="usage_records")
    provider = models.CharField(max_length=16, db_index=True)
    region = models.CharField(max_length=64)
    instance_type = models.CharField(max_length=64)
    # How the instance was bought, copied from it: "spot", or "on_demand" when a deadline needed the fallback.
    market = models.CharField(max_length=16, choices=MARKETS, default=Market.SPOT.value)
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField()
    duration_seconds = models.DecimalField(max_digits=14, decimal_places=3)
    duration_hours = models.DecimalField(max_digits=14, decimal_places=6)
    # The price per hour it was bought at: the spot price, or the on-demand price for an on-demand segment.
    spot_price_per_hour = models.DecimalField(max_digits=12, decimal_places=6)
    on_demand_price_per_hour = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    total_cost = models.DecimalField(max_digits=14, decimal_places=6)
    on_demand_cost = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "usage_records"
        ordering = ["-ended_at"]
        indexes = [models.Index(fields=["customer", "ended_at"])]

    def __str__(self) -> str:
        return f"{self.provider}/{self.instance_type} ({self.market}) {self.duration_hours}h = {self.total_cost}"

    @property
    def saving(self):
        return None if self.on_demand_cost is None else self.on_demand_cost - self.total_cost
