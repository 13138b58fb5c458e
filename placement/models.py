"""The price catalog: instance types, offers (one per pool), price history, pool blocks.

A *pool* is (provider, region, availability zone, instance type): the unit a
cloud prices and reclaims spot capacity in. ``Offer`` is one pool's current
price; ``PriceHistory`` keeps one row per observed change of it. An instance
type's shape (vCPU, memory, GPUs, architecture) lives once on ``InstanceType``,
which also keeps the cheapest figures of its offers so the optimizer can rank
types before it reads any offer (see ``placement/optimizer.py``).
"""

from __future__ import annotations

from decimal import Decimal

from django.db import models
from django.utils import timezone

from placement.requirements import ARCHITECTURES, GPU_TYPES, PROVIDERS
from placement.risk import saving_pct

MONEY = {"max_digits": 12, "decimal_places": 6}


class RiskBucket(models.IntegerChoices):
    """Interruption frequency over a month, the AWS Spot Instance Advisor's scale."""

    VERY_LOW = 0, "<5%"
    LOW = 1, "5-10%"
    MEDIUM = 2, "10-15%"
    HIGH = 3, "15-20%"
    VERY_HIGH = 4, ">20%"


class Category(models.TextChoices):
    GENERAL = "general", "General purpose"
    COMPUTE = "compute", "Compute optimised"
    MEMORY = "memory", "Memory optimised"
    GPU = "gpu", "GPU"


class InstanceType(models.Model):
    provider = models.CharField(max_length=8, choices=[(p, p) for p in PROVIDERS])
    name = models.CharField(max_length=64)
    category = models.CharField(max_length=8, choices=Category.choices, default=Category.GENERAL)
    vcpu = models.PositiveIntegerField()
    memory_gb = models.FloatField()
    gpu_count = models.PositiveSmallIntegerField(default=0)
    gpu_type = models.CharField(max_length=8, choices=[(g, g) for g in GPU_TYPES], null=True, blank=True)
    architecture = models.CharField(max_length=8, choices=[(a, a) for a in ARCHITECTURES], default="x86_64")
    # The cheapest of this type's offers, kept by the services that write offers:
    # lower bounds that let the optimizer rank types before reading offers.
    min_spot_price = models.DecimalField(**MONEY, null=True, blank=True)
    min_expected_cost = models.DecimalField(**MONEY, null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["provider", "name"], name="instance_type_unique_name")]
        indexes = [models.Index(fields=["min_expected_cost", "id"], name="instance_type_rank")]
        ordering = ["provider", "vcpu", "memory_gb", "name"]

    def __str__(self) -> str:
        return f"{self.provider} {self.name}"


class Offer(models.Model):
    """One pool's current spot price (and the on-demand price it saves against)."""

    # Indexed by offer_rank_in_type, which starts with it.
    instance_type = models.ForeignKey(InstanceType, on_delete=models.PROTECT, related_name="offers", db_index=False)
    region = models.CharField(max_length=64)
    availability_zone = models.CharField(max_length=64)
    spot_price = models.DecimalField(**MONEY)
    on_demand_price = models.DecimalField(**MONEY)
    risk_bucket = models.PositiveSmallIntegerField(choices=RiskBucket.choices)
    # spot_price adjusted for the interruption risk (placement/risk.py): what the optimizer ranks by.
    expected_cost = models.DecimalField(**MONEY)
    observed_at = models.DateTimeField()
    source = models.CharField(max_length=32, help_text="snapshot, or the price API that last set it")
    # The cloud's own score of this pool's spot capacity (AWS's Spot placement score, 1-10), when it has one:
    # the prior of the pool's refusal rate until the fleet has launched there (placement/selectors.py).
    placement_score = models.PositiveSmallIntegerField(null=True, blank=True)
    placement_score_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["instance_type", "region", "availability_zone"], name="offer_unique_pool")
        ]
        indexes = [
            # Each type's offers best first, with every tie-break, so the optimizer's
            # per-type top-n reads only the rows it returns.
            models.Index(
                fields=["instance_type", "expected_cost", "spot_price", "risk_bucket", "region", "availability_zone"],
                name="offer_rank_in_type",
            ),
            # Quotes pinned to regions or zones rank the types offered there from these alone.
            models.Index(fields=["region", "instance_type", "expected_cost", "spot_price"], name="offer_region"),
            models.Index(
                fields=["availability_zone", "instance_type", "expected_cost", "spot_price"], name="offer_zone"
            ),
        ]
        ordering = ["expected_cost", "spot_price", "id"]

    def __str__(self) -> str:
        return f"{self.instance_type.provider}/{self.region}/{self.availability_zone}/{self.instance_type.name}"

    @property
    def saving_pct(self) -> Decimal:
        return saving_pct(spot_price=self.spot_price, on_demand_price=self.on_demand_price)


class PriceHistory(models.Model):
    """One row per observed change of a pool's price (the first observation included)."""

    offer = models.ForeignKey(Offer, on_delete=models.CASCADE, related_name="history", db_index=False)
    spot_price = models.DecimalField(**MONEY)
    on_demand_price = models.DecimalField(**MONEY)
    risk_bucket = models.PositiveSmallIntegerField(choices=RiskBucket.choices)
    observed_at = models.DateTimeField()
    source = models.CharField(max_length=32)

    class Meta:
        indexes = [models.Index(fields=["offer", "-observed_at"], name="price_history_by_offer")]
        ordering = ["-observed_at", "-id"]
        verbose_name_plural = "price history"

    def __str__(self) -> str:
        return f"{self.offer} {self.spot_price} at {self.observed_at:%Y-%m-%d %H:%M}"


class PoolBlock(models.Model):
    """A pool the optimizer skips until ``until``: one row per pool, extended on each new block."""

    provider = models.CharField(max_length=8, choices=[(p, p) for p in PROVIDERS])
    region = models.CharField(max_length=64)
    availability_zone = models.CharField(max_length=64)
    instance_type = models.CharField(max_length=64)
    until = models.DateTimeField()
    reason = models.TextField(blank=True)
    times_blocked = models.PositiveIntegerField(default=1, help_text="how often this pool has been blocked")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "region", "availability_zone", "instance_type"], name="pool_block_unique_pool"
            )
        ]
        indexes = [models.Index(fields=["until"], name="pool_block_until")]
        ordering = ["-until"]

    def __str__(self) -> str:
        return f"{self.provider}/{self.region}/{self.availability_zone}/{self.instance_type}"

    @property
    def is_active(self) -> bool:
        return self.until > timezone.now()


class PriceRefresh(models.Model):
    """One run of a provider's price refresh: what it changed, or why it kept the old prices."""

    class Status(models.TextChoices):
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    provider = models.CharField(max_length=8, choices=[(p, p) for p in PROVIDERS])
    regions = models.JSONField(default=list)
    status = models.CharField(max_length=10, choices=Status.choices)
    prices_seen = models.PositiveIntegerField(default=0)
    offers_updated = models.PositiveIntegerField(default=0)
    prices_changed = models.PositiveIntegerField(default=0)
    unknown_pools = models.PositiveIntegerField(default=0, help_text="prices for pools not in the catalog (skipped)")
    error = models.TextField(blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["provider", "-started_at"], name="price_refresh_recent")]
        ordering = ["-started_at", "-id"]
        verbose_name_plural = "price refreshes"

    def __str__(self) -> str:
        return f"{self.provider} refresh {self.started_at:%Y-%m-%d %H:%M} {self.status}"


class ReconcileFinding(models.Model):
    """What reconciliation found comparing a cloud's managed instances with the database.

    A *leak* is an instance tagged ``managed-by`` that no workload owns: it is
    terminated once older than ``RECONCILE_GRACE_SECONDS``. A *lost* instance is
    a RUNNING workload's instance the cloud no longer has: the workload goes to
    the interruption handling. One row per (provider, instance, kind).
    """

    class Kind(models.TextChoices):
        LEAK = "leak", "Instance no workload owns"
        LOST = "lost", "Running workload's instance is gone"

    class Outcome(models.TextChoices):
        WAITING = "waiting", "Inside the grace period"
        TERMINATED = "terminated", "Terminated"
        INTERRUPTED = "interrupted", "Handed to interruption handling"
        GONE = "gone", "Gone before acting"

    provider = models.CharField(max_length=8, choices=[(p, p) for p in PROVIDERS])
    region = models.CharField(max_length=64)
    instance_id = models.CharField(max_length=128)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    outcome = models.CharField(max_length=12, choices=Outcome.choices)
    # Plain id, not a foreign key: a leak has no workload, and findings outlive workloads.
    workload_id = models.UUIDField(null=True, blank=True)
    launched_at = models.DateTimeField(null=True, blank=True)
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    acted_at = models.DateTimeField(null=True, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "instance_id", "kind"], name="reconcile_finding_unique")
        ]
        ordering = ["-last_seen_at"]

    def __str__(self) -> str:
        return f"{self.kind} {self.provider}/{self.region}/{self.instance_id}: {self.outcome}"


class PoolStats(models.Model):
    """What the whole fleet has seen of one pool (docs/architecture.md §16): lifetimes, preemptions, refusals.

    Counters decay with a half-life (``POOL_STATS_HALF_LIFE_HOURS``): each update first
    scales them by ``2 ** (-hours since updated_at / half-life)``, so old evidence weighs less.
    ``exposure_seconds`` is instance run time (censored lifetimes included), ``preemptions``
    the reclaims among it: their ratio is the pool's hazard (a Nelson-Aalen estimate at a
    constant rate), with the catalog's interruption bucket as a prior (placement/selectors.py).
    """

    provider = models.CharField(max_length=8, choices=[(p, p) for p in PROVIDERS])
    region = models.CharField(max_length=64)
    availability_zone = models.CharField(max_length=64)
    instance_type = models.CharField(max_length=64)
    market = models.CharField(max_length=16, default="spot")
    instances_seen = models.PositiveIntegerField(default=0)
    exposure_seconds = models.FloatField(default=0.0, help_text="Decayed instance run time.")
    preemptions = models.FloatField(default=0.0, help_text="Decayed count of reclaims.")
    launch_attempts = models.FloatField(default=0.0, help_text="Decayed count of launches tried.")
    refusals = models.FloatField(default=0.0, help_text="Decayed count of capacity refusals.")
    preemptions_total = models.PositiveIntegerField(default=0)
    refusals_total = models.PositiveIntegerField(default=0)
    last_preemption_at = models.DateTimeField(null=True, blank=True)
    last_refusal_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "region", "availability_zone", "instance_type", "market"],
                name="pool_stats_unique_pool",
            )
        ]
        verbose_name_plural = "pool statistics"
        ordering = ["provider", "region", "availability_zone", "instance_type"]

    def __str__(self) -> str:
        return f"{self.provider}/{self.region}/{self.availability_zone}/{self.instance_type} ({self.market})"
