"""Request validation and response shapes for the billing API. Money and hours are decimal strings."""

from __future__ import annotations

from datetime import date

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from arbitrage.api.fields import StrictCharField, StrictSerializer
from billing.selectors import month_parse, workload_cost_so_far
from placement.clouds.base import Market


def _money(**kwargs) -> serializers.DecimalField:
    return serializers.DecimalField(max_digits=20, decimal_places=6, **kwargs)


class MonthQuerySerializer(StrictSerializer):
    month = StrictCharField(required=False, help_text="YYYY-MM (UTC); default: the current month.")

    def validate_month(self, value: str) -> date:
        try:
            return month_parse(value)
        except ValueError as error:
            raise serializers.ValidationError(str(error)) from None


class ProviderSummarySerializer(serializers.Serializer):
    provider = serializers.CharField()
    instance_hours = _money()
    spend = _money()
    spot_spend = _money(help_text="The part of spend that ran on spot capacity.")
    on_demand_spend = _money(help_text="The part of spend that ran on on-demand capacity; spot + on demand = spend.")
    on_demand_equivalent = _money()
    saving = _money()


class MonthlySummarySerializer(serializers.Serializer):
    """A calendar month (UTC) of the caller's usage, in total and per provider."""

    month = serializers.CharField(source="label", help_text="YYYY-MM, UTC.")
    currency = serializers.CharField()
    instance_hours = _money(help_text="Hours every instance ran in the month, running ones up to now.")
    spend = _money(help_text="Seconds run x the price each instance was bought at (spot, or on demand).")
    spot_spend = _money(help_text="The part of spend that ran on spot capacity.")
    on_demand_spend = _money(
        help_text="The part of spend that ran on on-demand capacity (a deadline's fallback); spot + on demand = spend."
    )
    on_demand_equivalent = _money(help_text="The same seconds at on-demand prices (as if all ran on demand).")
    saving = _money(help_text="on_demand_equivalent - spend.")
    saving_percent = serializers.DecimalField(
        max_digits=7, decimal_places=2, allow_null=True, help_text="saving / on_demand_equivalent; null if nothing ran."
    )
    budget = serializers.DecimalField(
        max_digits=12, decimal_places=2, allow_null=True, help_text="The monthly budget; null when there is none."
    )
    budget_remaining = _money(allow_null=True, help_text="budget - spend, never below 0; null without a budget.")
    providers = ProviderSummarySerializer(many=True)


class SegmentCostSerializer(serializers.Serializer):
    provider = serializers.CharField()
    region = serializers.CharField()
    instance_type = serializers.CharField()
    market = serializers.ChoiceField(
        choices=[market.value for market in Market],
        help_text="How the instance was bought: spot, or on_demand (then spot_price_per_hour is the on-demand price).",
    )
    started_at = serializers.DateTimeField()
    ended_at = serializers.DateTimeField(allow_null=True, help_text="null while the instance runs.")
    hours = _money()
    spot_price_per_hour = _money(help_text="The price per hour it was bought at.")
    cost = _money()
    on_demand_cost = _money()


class WorkloadCostSerializer(serializers.Serializer):
    """The workload's cost so far, segment by segment; a running instance accrues by the second."""

    currency = serializers.CharField()
    spend = _money()
    on_demand_equivalent = _money()
    saving = _money()
    segments = SegmentCostSerializer(many=True)


@extend_schema_field(WorkloadCostSerializer)
class WorkloadCostField(serializers.Field):
    """A workload detail's "cost" section (registered by ``BillingConfig.ready``)."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault(
            "help_text",
            "Cost so far: spend, on-demand equivalent, saving and each instance segment; "
            "a running instance accrues by the second.",
        )
        super().__init__(source="*", read_only=True, **kwargs)

    def to_representation(self, workload) -> dict:
        return WorkloadCostSerializer(workload_cost_so_far(workload_id=workload.id)).data
