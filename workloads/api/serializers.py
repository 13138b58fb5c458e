"""Request validation and response shapes for the workloads API."""

from __future__ import annotations

import re
from collections.abc import Callable

from rest_framework import serializers

from accounts.tokens import access_token_for
from arbitrage.api.fields import (
    StrictBooleanField,
    StrictCharField,
    StrictIntegerField,
    StrictSerializer,
)
from placement.requirements import RequirementsSerializer
from storage.selectors import storage_summary_get
from workloads.models import RecoveryPolicy, Workload, WorkloadEvent, WorkloadInstance, WorkloadStatus

ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MAX_ENV_VARS = 100


class StorageSettingsSerializer(StrictSerializer):
    enabled = StrictBooleanField(default=False)
    quota_gb = StrictIntegerField(min_value=1, max_value=10_240, default=10)
    retention_days = StrictIntegerField(min_value=1, max_value=3650, default=30)


class ConfigSerializer(StrictSerializer):
    """How to run the workload."""

    image_id = StrictCharField(max_length=500, required=False, allow_blank=False)
    command = serializers.ListField(
        child=StrictCharField(max_length=4096, allow_blank=True), max_length=100, required=False
    )
    env = serializers.DictField(child=StrictCharField(max_length=4096, allow_blank=True), required=False)
    health_check_port = StrictIntegerField(min_value=1, max_value=65535, default=8080)
    # "private": the gateway admits only the customer's API key or the workload's access token.
    access = serializers.ChoiceField(choices=("public", "private"), default="public")
    storage = StorageSettingsSerializer(required=False)

    def validate_env(self, env: dict[str, str]) -> dict[str, str]:
        if len(env) > MAX_ENV_VARS:
            raise serializers.ValidationError(f"At most {MAX_ENV_VARS} variables.")
        bad = [name for name in env if not ENV_NAME_PATTERN.match(name)]
        if bad:
            raise serializers.ValidationError(f"Not a variable name: {bad[0]!r}.")
        return env


class WorkloadCreateSerializer(StrictSerializer):
    name = StrictCharField(max_length=200)
    requirements = RequirementsSerializer()
    config = ConfigSerializer(required=False)
    recovery_policy = serializers.ChoiceField(choices=RecoveryPolicy.choices, default=RecoveryPolicy.MIGRATE)

    def validate_name(self, name: str) -> str:
        name = name.strip()
        if not name:
            raise serializers.ValidationError("May not be blank.")
        if any(ord(ch) < 32 for ch in name):
            raise serializers.ValidationError("May not contain control characters.")
        return name

    def validate(self, attrs):
        # Stored as JSON in its normalised form: defaults filled, decimals as strings.
        config = attrs.get("config") or ConfigSerializer().run_validation({})
        config.setdefault("storage", StorageSettingsSerializer().run_validation({}))
        attrs["requirements"] = RequirementsSerializer().to_representation(attrs["requirements"])
        attrs["config"] = ConfigSerializer().to_representation(config)
        return attrs


class WorkloadListQuerySerializer(StrictSerializer):
    status = serializers.ChoiceField(choices=WorkloadStatus.choices, required=False)
    page = StrictCharField(required=False)
    page_size = StrictCharField(required=False)


class WorkloadInstanceSerializer(serializers.ModelSerializer):
    class Meta:
        model = WorkloadInstance
        fields = [
            "id",
            "provider",
            "region",
            "availability_zone",
            "instance_type",
            "instance_id",
            "public_ip",
            "status",
            "spot_price",
            "on_demand_price",
            "created_at",
            "terminated_at",
        ]


class WorkloadEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = WorkloadEvent
        fields = ["kind", "name", "from_status", "to_status", "message", "detail", "created_at"]


class WorkloadSerializer(serializers.ModelSerializer):
    endpoint = serializers.CharField(read_only=True)

    class Meta:
        model = Workload
        fields = [
            "id",
            "name",
            "status",
            "endpoint",
            "requirements",
            "config",
            "recovery_policy",
            "started_at",
            "terminated_at",
            "termination_reason",
            "failure_reason",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


# Sections of a workload's detail added by apps that workloads may not import (billing adds
# "cost" in its AppConfig.ready): name -> a factory of a read-only field whose source is the
# whole workload (``source="*"``).
DETAIL_SECTIONS: dict[str, Callable[[], serializers.Field]] = {}


def workload_detail_section_register(*, name: str, field_factory: Callable[[], serializers.Field]) -> None:
    DETAIL_SECTIONS[name] = field_factory


class WorkloadDetailSerializer(WorkloadSerializer):
    instances = WorkloadInstanceSerializer(many=True, read_only=True)
    events = WorkloadEventSerializer(many=True, read_only=True)
    access_token = serializers.SerializerMethodField(
        help_text="For a private workload: the token that reaches its endpoint through the gateway."
    )
    storage = serializers.SerializerMethodField(
        help_text="Storage usage: used_bytes, quota_bytes, retention_days, object_count; null when storage is off."
    )

    class Meta(WorkloadSerializer.Meta):
        fields = [*WorkloadSerializer.Meta.fields, "access_token", "storage", "instances", "events"]
        read_only_fields = fields

    def get_fields(self):
        # The sections apps above workloads add (billing: "cost") go before the instances.
        fields = {}
        for name, field in super().get_fields().items():
            if name == "instances":
                fields.update({section: make_field() for section, make_field in DETAIL_SECTIONS.items()})
            fields[name] = field
        return fields

    def get_storage(self, workload) -> dict | None:
        return storage_summary_get(workload_id=workload.id)

    def get_access_token(self, workload) -> str | None:
        if workload.config.get("access") != "private":
            return None
        return access_token_for(workload.id)
