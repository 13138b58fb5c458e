"""Operator console: the catalog, each pool's price history, pool blocks, price refreshes and reconciliation.

The catalog is written by its sources (the bundled snapshot, the price APIs), so
offers and history are read-only here; blocks can be added, extended and cleared.
The refresh schedule is the "Refresh spot prices" periodic task (Periodic tasks).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib import admin
from django.db.models import OuterRef, Subquery
from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from placement import services
from placement.models import InstanceType, Offer, PoolBlock, PoolStats, PriceHistory, PriceRefresh, ReconcileFinding
from placement.risk import BUCKET_LABELS
from placement.selectors import DEFAULT_BUCKET, pool_estimate


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(InstanceType)
class InstanceTypeAdmin(ReadOnlyAdmin):
    list_display = [
        "name",
        "provider",
        "category",
        "vcpu",
        "memory_gb",
        "gpu_count",
        "gpu_type",
        "architecture",
        "min_spot_price",
        "min_expected_cost",
    ]
    list_filter = ["provider", "category", "architecture", "gpu_type"]
    search_fields = ["name"]


# --- the price history chart: inline SVG made here, nothing fetched by the browser ----------

CHART_WIDTH, CHART_HEIGHT = 640, 200
CHART_PAD_LEFT, CHART_PAD_RIGHT, CHART_PAD_TOP, CHART_PAD_BOTTOM = 64, 16, 14, 30
CHART_POINTS = 500


def price_chart_svg(points: Sequence[tuple[datetime, Decimal]], *, now: datetime | None = None) -> SafeString:
    """A step chart of spot prices over time (each price holds until the next observation, the last one to now).

    ``points`` are ``(observed_at, spot_price)`` in any order. Every value put
    into the markup is a number or escaped text.
    """
    if not points:
        return mark_safe('<p class="price-chart-empty">No price history yet.</p>')
    points = sorted(points)
    now = max(now or timezone.now(), points[-1][0])
    start = points[0][0]
    span = max((now - start).total_seconds(), 1.0)
    prices = [float(price) for _, price in points]
    low, high = min(prices), max(prices)
    margin = (high - low) * 0.1 or high * 0.1 or 1.0
    low, high = max(low - margin, 0.0), high + margin
    plot_w = CHART_WIDTH - CHART_PAD_LEFT - CHART_PAD_RIGHT
    plot_h = CHART_HEIGHT - CHART_PAD_TOP - CHART_PAD_BOTTOM

    def x(moment: datetime) -> float:
        return CHART_PAD_LEFT + (moment - start).total_seconds() / span * plot_w

    def y(price: float) -> float:
        return CHART_PAD_TOP + (high - price) / (high - low) * plot_h

    path = [f"M{x(points[0][0]):.1f},{y(prices[0]):.1f}"]
    for (moment, _), price in zip(points[1:], prices[1:], strict=True):
        path.append(f"H{x(moment):.1f}V{y(price):.1f}")
    path.append(f"H{x(now):.1f}")
    dots = "".join(
        f'<circle cx="{x(moment):.1f}" cy="{y(price):.1f}" r="3" class="price-point">'
        f"<title>{escape(f'{moment:%Y-%m-%d %H:%M} UTC: {raw}')}</title></circle>"
        for (moment, raw), price in zip(points, prices, strict=True)
    )
    bottom = CHART_HEIGHT - CHART_PAD_BOTTOM
    grid = "".join(
        f'<line x1="{CHART_PAD_LEFT}" x2="{CHART_WIDTH - CHART_PAD_RIGHT}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
        f'class="price-grid"/><text x="{CHART_PAD_LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end">'
        f"{value:.4f}</text>"
        for value in (low + (high - low) * i / 4 for i in range(5))
    )
    cheapest, dearest = min(raw for _, raw in points), max(raw for _, raw in points)
    label = f"Spot price history: {len(points)} observation(s) since {start:%Y-%m-%d}, {cheapest} to {dearest} USD/h"
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="price-chart" width="{CHART_WIDTH}" height="{CHART_HEIGHT}" '
        f'viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" role="img" aria-label="{escape(label)}" '
        'style="font: 11px sans-serif; fill: var(--body-quiet-color, #666); max-width: 100%; height: auto;">'
        f"<title>{escape(label)}</title>"
        "<style>.price-grid{stroke:var(--hairline-color,#e5e5e5);stroke-width:1}"
        ".price-line{fill:none;stroke:var(--link-fg,#417690);stroke-width:2}"
        ".price-point{fill:var(--link-fg,#417690)}</style>"
        f"{grid}"
        f'<path d="{"".join(path)}" class="price-line"/>{dots}'
        f'<text x="{CHART_PAD_LEFT}" y="{bottom + 18}" text-anchor="start">{start:%Y-%m-%d %H:%M}</text>'
        f'<text x="{CHART_WIDTH - CHART_PAD_RIGHT}" y="{bottom + 18}" text-anchor="end">now</text>'
        f'<text x="{CHART_PAD_LEFT + plot_w / 2:.1f}" y="{bottom + 18}" text-anchor="middle">USD / hour (spot)</text>'
        "</svg>"
    )
    return mark_safe(svg)  # numbers and escaped text only


class PriceHistoryInline(admin.TabularInline):
    model = PriceHistory
    extra = 0
    fields = ["observed_at", "spot_price", "on_demand_price", "risk_bucket", "source"]
    readonly_fields = fields
    ordering = ["-observed_at", "-id"]
    can_delete = False
    max_num = 0
    verbose_name_plural = "price history (newest first)"


@admin.register(Offer)
class OfferAdmin(ReadOnlyAdmin):
    list_display = [
        "instance_type_name",
        "provider",
        "region",
        "availability_zone",
        "vcpu",
        "memory_gb",
        "gpus",
        "spot_price",
        "on_demand_price",
        "saving",
        "interruption_frequency",
        "placement_score",
        "expected_cost",
        "observed_at",
        "source",
    ]
    list_filter = [
        "instance_type__provider",
        "region",
        "risk_bucket",
        "instance_type__category",
        "instance_type__architecture",
        "instance_type__gpu_type",
        "source",
    ]
    search_fields = ["instance_type__name", "region", "availability_zone"]
    list_select_related = ["instance_type"]
    ordering = ["expected_cost", "spot_price", "id"]
    inlines = [PriceHistoryInline]
    readonly_fields = ["price_chart"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "instance_type",
                    ("region", "availability_zone"),
                    ("spot_price", "on_demand_price"),
                    ("risk_bucket", "expected_cost"),
                    ("observed_at", "source"),
                ]
            },
        ),
        ("Spot price history", {"fields": ["price_chart"]}),
    ]

    @admin.display(description="chart")
    def price_chart(self, offer: Offer) -> SafeString:
        rows = offer.history.order_by("-observed_at", "-id").values_list("observed_at", "spot_price")[:CHART_POINTS]
        return price_chart_svg(list(rows))

    @admin.display(ordering="instance_type__name", description="instance type")
    def instance_type_name(self, offer: Offer) -> str:
        return offer.instance_type.name

    @admin.display(ordering="instance_type__provider")
    def provider(self, offer: Offer) -> str:
        return offer.instance_type.provider

    @admin.display(ordering="instance_type__vcpu", description="vCPU")
    def vcpu(self, offer: Offer) -> int:
        return offer.instance_type.vcpu

    @admin.display(ordering="instance_type__memory_gb", description="memory GiB")
    def memory_gb(self, offer: Offer) -> float:
        return offer.instance_type.memory_gb

    @admin.display(description="GPUs")
    def gpus(self, offer: Offer) -> str:
        instance_type = offer.instance_type
        return f"{instance_type.gpu_count} x {instance_type.gpu_type}" if instance_type.gpu_count else "-"

    @admin.display(description="saving %")
    def saving(self, offer: Offer):
        return offer.saving_pct

    @admin.display(ordering="risk_bucket", description="interruptions")
    def interruption_frequency(self, offer: Offer) -> str:
        return BUCKET_LABELS[offer.risk_bucket]


@admin.register(PriceHistory)
class PriceHistoryAdmin(ReadOnlyAdmin):
    list_display = ["offer", "observed_at", "spot_price", "on_demand_price", "risk_bucket", "source"]
    list_filter = ["offer__instance_type__provider", "source", "offer__region"]
    search_fields = ["offer__instance_type__name", "offer__region", "offer__availability_zone"]
    list_select_related = ["offer__instance_type"]
    date_hierarchy = "observed_at"


class BlockStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("active", "blocked now"), ("expired", "expired")]

    def queryset(self, request, queryset):
        if self.value() == "active":
            return queryset.filter(until__gt=timezone.now())
        if self.value() == "expired":
            return queryset.filter(until__lte=timezone.now())
        return queryset


@admin.register(PoolBlock)
class PoolBlockAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "active",
        "until",
        "reason",
        "times_blocked",
        "updated_at",
    ]
    list_filter = [BlockStateFilter, "provider", "region"]
    search_fields = ["instance_type", "region", "availability_zone", "reason"]
    fields = ["provider", "region", "availability_zone", "instance_type", "until", "reason", "times_blocked"]
    readonly_fields = ["times_blocked"]
    actions = ["clear"]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return self.readonly_fields
        # The pool is the block's identity: a block for another pool is another row.
        return [*self.readonly_fields, "provider", "region", "availability_zone", "instance_type"]

    def get_changeform_initial_data(self, request):
        return {
            "until": timezone.now() + timedelta(seconds=settings.POOL_BLOCK_SECONDS),
            **super().get_changeform_initial_data(request),
        }

    @admin.display(boolean=True, description="blocked now")
    def active(self, block: PoolBlock) -> bool:
        return block.is_active

    def save_model(self, request, obj, form, change) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        # A new block goes through the service, which extends an existing block of the pool.
        seconds = max(1, int((obj.until - timezone.now()).total_seconds()))
        block = services.pool_block(
            provider=obj.provider,
            region=obj.region,
            availability_zone=obj.availability_zone,
            instance_type=obj.instance_type,
            reason=obj.reason or f"blocked by {request.user}",
            seconds=seconds,
        )
        obj.pk = block.pk

    @admin.action(description="Clear selected blocks (the pools are used again at once)")
    def clear(self, request, queryset) -> None:
        cleared = sum(
            services.pool_unblock(
                provider=block.provider,
                region=block.region,
                availability_zone=block.availability_zone,
                instance_type=block.instance_type,
            )
            for block in queryset
        )
        self.message_user(request, f"Cleared {cleared} active block(s).")


@admin.register(PriceRefresh)
class PriceRefreshAdmin(ReadOnlyAdmin):
    list_display = [
        "provider",
        "status",
        "started_at",
        "prices_seen",
        "offers_updated",
        "prices_changed",
        "unknown_pools",
        "error",
    ]
    list_filter = ["provider", "status"]
    date_hierarchy = "started_at"


@admin.register(ReconcileFinding)
class ReconcileFindingAdmin(ReadOnlyAdmin):
    """What reconciliation found: leaked instances (terminated after the grace period) and lost ones.

    The schedule is the "Cloud reconciliation" periodic task; ``manage.py reconcile --dry-run``
    shows what a pass would do now.
    """

    list_display = [
        "kind",
        "outcome",
        "provider",
        "region",
        "instance_id",
        "workload_id",
        "launched_at",
        "first_seen_at",
        "acted_at",
    ]
    list_filter = ["kind", "outcome", "provider"]
    search_fields = ["instance_id", "workload_id"]
    date_hierarchy = "first_seen_at"


@admin.register(PoolStats)
class PoolStatsAdmin(ReadOnlyAdmin):
    """One row per pool: what the fleet has seen of it, and what the policy is told about it."""

    list_display = [
        "__str__",
        "instances_seen",
        "preemptions_total",
        "estimated_lifetime",
        "refusal_rate",
        "refusals_total",
        "last_refusal_at",
        "last_preemption_at",
    ]
    list_filter = ["provider", "market", "region"]
    search_fields = ["region", "availability_zone", "instance_type"]

    def get_queryset(self, request):
        # Each row's catalog bucket (the estimate's prior) in the same query, not one query per row.
        bucket = Offer.objects.filter(
            instance_type__provider=OuterRef("provider"),
            instance_type__name=OuterRef("instance_type"),
            region=OuterRef("region"),
            availability_zone=OuterRef("availability_zone"),
        )
        return (
            super()
            .get_queryset(request)
            .annotate(
                catalog_bucket=Subquery(bucket.values("risk_bucket")[:1]),
                catalog_placement_score=Subquery(bucket.values("placement_score")[:1]),
            )
        )

    def _estimate(self, stats: PoolStats):
        bucket = getattr(stats, "catalog_bucket", None)
        return pool_estimate(
            stats=stats,
            risk_bucket=DEFAULT_BUCKET if bucket is None else bucket,
            pool=(stats.provider, stats.region, stats.availability_zone, stats.instance_type),
            market=stats.market,
            placement_score=getattr(stats, "catalog_placement_score", None),
        )

    @admin.display(description="expected lifetime")
    def estimated_lifetime(self, stats: PoolStats) -> str:
        seconds = self._estimate(stats).expected_lifetime_seconds
        return "never reclaimed" if seconds == float("inf") else f"{seconds / 3600:,.1f} h"

    @admin.display(description="refusal rate")
    def refusal_rate(self, stats: PoolStats) -> str:
        return f"{self._estimate(stats).refusal_rate:.0%}"
