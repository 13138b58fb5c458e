"""Operator console: the catalog, each pool's price history, pool blocks and price refreshes.

The catalog is written by its sources (the bundled snapshot, the price APIs), so
offers and history are read-only here; blocks can be added, extended and cleared.
The refresh schedule is the "Refresh spot prices" periodic task (Periodic tasks).
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib import admin
from django.utils import timezone

from placement import services
from placement.models import InstanceType, Offer, PoolBlock, PriceHistory, PriceRefresh
from placement.risk import BUCKET_LABELS


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
