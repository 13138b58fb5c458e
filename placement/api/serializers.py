"""Request validation and response shapes for the placement API."""

from __future__ import annotations

from django.core.validators import RegexValidator
from rest_framework import serializers

from arbitrage.api.fields import StrictCharField, StrictIntegerField, StrictSerializer
from placement.models import Offer, PriceHistory
from placement.requirements import GPU_TYPES, PROVIDERS, REGION_PATTERN, RequirementsSerializer
from placement.risk import BUCKET_LABELS

MAX_QUOTE_LIMIT = 50


class QuoteRequestSerializer(StrictSerializer):
    requirements = RequirementsSerializer()
    limit = StrictIntegerField(min_value=1, max_value=MAX_QUOTE_LIMIT, default=10)


class CandidateSerializer(serializers.Serializer):
    """One ranked offer (``placement.selectors.Candidate``) and the parts of its score."""

    rank = serializers.IntegerField()
    provider = serializers.CharField()
    region = serializers.CharField()
    availability_zone = serializers.CharField()
    instance_type = serializers.CharField()
    vcpu = serializers.IntegerField()
    memory_gb = serializers.FloatField()
    gpu_count = serializers.IntegerField()
    gpu_type = serializers.CharField(allow_null=True)
    architecture = serializers.CharField()
    spot_price = serializers.DecimalField(max_digits=12, decimal_places=6)
    on_demand_price = serializers.DecimalField(max_digits=12, decimal_places=6)
    saving_pct = serializers.DecimalField(max_digits=5, decimal_places=1, help_text="spot versus on-demand, percent")
    risk_bucket = serializers.IntegerField(help_text="0 '<5%' ... 4 '>20%' interruptions a month")
    expected_cost_per_hour = serializers.DecimalField(
        max_digits=12, decimal_places=6, help_text="the score: spot price adjusted for the interruption risk"
    )
    score_parts = serializers.DictField(child=serializers.CharField())
    observed_at = serializers.DateTimeField(allow_null=True)


class QuoteResponseSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    candidates = CandidateSerializer(many=True)


class OfferListQuerySerializer(StrictSerializer):
    provider = serializers.ChoiceField(choices=PROVIDERS, required=False)
    region = serializers.CharField(
        max_length=63,
        required=False,
        validators=[RegexValidator(REGION_PATTERN, "Not a region name (like us-east-1 or westeurope).")],
    )
    gpu_type = serializers.ChoiceField(choices=GPU_TYPES, required=False)
    min_vcpu = serializers.IntegerField(min_value=1, max_value=448, required=False)
    min_memory_gb = serializers.FloatField(min_value=0.5, max_value=24576, required=False)
    page = StrictCharField(required=False)
    page_size = StrictCharField(required=False)


class OfferSerializer(serializers.ModelSerializer):
    provider = serializers.CharField(source="instance_type.provider")
    instance_type = serializers.CharField(source="instance_type.name")
    category = serializers.CharField(source="instance_type.category")
    vcpu = serializers.IntegerField(source="instance_type.vcpu")
    memory_gb = serializers.FloatField(source="instance_type.memory_gb")
    gpu_count = serializers.IntegerField(source="instance_type.gpu_count")
    gpu_type = serializers.CharField(source="instance_type.gpu_type", allow_null=True)
    architecture = serializers.CharField(source="instance_type.architecture")
    saving_pct = serializers.DecimalField(max_digits=5, decimal_places=1, read_only=True)
    interruption_frequency = serializers.SerializerMethodField()
    expected_cost_per_hour = serializers.DecimalField(source="expected_cost", max_digits=12, decimal_places=6)

    class Meta:
        model = Offer
        fields = [
            "id",
            "provider",
            "region",
            "availability_zone",
            "instance_type",
            "category",
            "vcpu",
            "memory_gb",
            "gpu_count",
            "gpu_type",
            "architecture",
            "spot_price",
            "on_demand_price",
            "saving_pct",
            "risk_bucket",
            "interruption_frequency",
            "expected_cost_per_hour",
            "observed_at",
            "source",
        ]
        read_only_fields = fields

    def get_interruption_frequency(self, offer: Offer) -> str:
        return BUCKET_LABELS[offer.risk_bucket]


class PriceHistorySerializer(serializers.ModelSerializer):
    class Meta:
        model = PriceHistory
        fields = ["spot_price", "on_demand_price", "risk_bucket", "observed_at", "source"]
        read_only_fields = fields


class OfferDetailSerializer(OfferSerializer):
    history = serializers.SerializerMethodField(help_text="price changes, newest first (at most 100)")

    class Meta(OfferSerializer.Meta):
        fields = [*OfferSerializer.Meta.fields, "history"]
        read_only_fields = fields

    def get_history(self, offer: Offer) -> list[dict]:
        return PriceHistorySerializer(self.context["history"], many=True).data
