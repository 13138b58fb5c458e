"""What a workload needs from an offer: the one definition shared by the
workloads API (stored with each workload) and the placement quote API."""

from __future__ import annotations

import re
from decimal import Decimal

from django.core.validators import RegexValidator
from rest_framework import serializers

from arbitrage.api.fields import (
    StrictCharField,
    StrictDecimalField,
    StrictFloatField,
    StrictIntegerField,
    StrictSerializer,
)

PROVIDERS = ("aws", "gcp", "azure")
ARCHITECTURES = ("x86_64", "arm64")
GPU_TYPES = ("T4", "L4", "A10G", "V100", "A100", "H100")
REGION_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
ZONE_PATTERN = REGION_PATTERN


class RequirementsSerializer(StrictSerializer):
    """What the workload needs; placement picks the cheapest offer that has it."""

    vcpu = StrictIntegerField(min_value=1, max_value=448)
    memory_gb = StrictFloatField(min_value=0.5, max_value=24576)
    gpu_count = StrictIntegerField(min_value=0, max_value=16, default=0)
    gpu_type = serializers.ChoiceField(choices=GPU_TYPES, required=False, allow_null=True, default=None)
    architecture = serializers.ChoiceField(choices=ARCHITECTURES, default="x86_64")
    providers = serializers.ListField(
        child=serializers.ChoiceField(choices=PROVIDERS),
        min_length=1,
        max_length=len(PROVIDERS),
        default=list(PROVIDERS),
    )
    regions = serializers.ListField(
        child=StrictCharField(
            max_length=63,
            validators=[RegexValidator(REGION_PATTERN, "Not a region name (like us-east-1 or westeurope).")],
        ),
        max_length=50,
        default=list,
    )
    zones = serializers.ListField(
        child=StrictCharField(
            max_length=63,
            validators=[RegexValidator(ZONE_PATTERN, "Not a zone name (like us-east-1a or europe-west4-b).")],
        ),
        max_length=100,
        default=list,
    )
    max_price_per_hour = StrictDecimalField(
        max_digits=12,
        decimal_places=6,
        min_value=Decimal("0.000001"),
        max_value=Decimal("10000"),
        required=False,
        allow_null=True,
        default=None,
        coerce_to_string=True,
    )

    def validate_providers(self, providers: list[str]) -> list[str]:
        return list(dict.fromkeys(providers))

    def validate(self, attrs):
        if attrs.get("gpu_type") and attrs["gpu_count"] == 0:
            raise serializers.ValidationError({"gpu_count": ["Must be at least 1 when gpu_type is given."]})
        return attrs
