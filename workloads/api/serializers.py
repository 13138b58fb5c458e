"""Request validation and response shapes for the workloads API."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework import serializers

from accounts.tokens import access_token_for
from arbitrage.api.fields import (
    StrictBooleanField,
    StrictCharField,
    StrictFloatField,
    StrictIntegerField,
    StrictSerializer,
)
from placement.clouds.registry import custom_commands_refused
from placement.requirements import RequirementsSerializer
from storage.selectors import storage_summary_get
from workloads.models import RecoveryPolicy, Workload, WorkloadEvent, WorkloadInstance, WorkloadStatus
from workloads.selectors import Progress, workload_progress

ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MAX_ENV_VARS = 100


class StorageSettingsSerializer(StrictSerializer):
    enabled = StrictBooleanField(default=False)
    quota_gb = StrictIntegerField(min_value=1, max_value=10_240, default=10)
    retention_days = StrictIntegerField(min_value=1, max_value=3650, default=30)
    checkpoint_size_gb = StrictFloatField(
        min_value=0,
        max_value=10_240,
        required=False,
        help_text="How big a checkpoint will be, in GB: what a move costs in egress before the first checkpoint "
        "says it (then the latest checkpoint's real size counts).",
    )

    def validate(self, attrs):
        size, quota = attrs.get("checkpoint_size_gb"), attrs.get("quota_gb", 10)
        if size is not None and size > quota:
            raise serializers.ValidationError({"checkpoint_size_gb": f"Larger than the storage quota ({quota} GB)."})
        return attrs


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

    def validate_command(self, command: list[str]) -> list[str]:
        if command and (refused := custom_commands_refused()):
            raise serializers.ValidationError(refused)
        return command

    def validate_env(self, env: dict[str, str]) -> dict[str, str]:
        if len(env) > MAX_ENV_VARS:
            raise serializers.ValidationError(f"At most {MAX_ENV_VARS} variables.")
        bad = [name for name in env if not ENV_NAME_PATTERN.match(name)]
        if bad:
            raise serializers.ValidationError(f"Not a variable name: {bad[0]!r}.")
        return env


MAX_DURATION_SECONDS = 366 * 86_400


class AwareDateTimeField(serializers.DateTimeField):
    """An ISO 8601 time that says its offset ("Z" or "+02:00"): a deadline must not depend on a guess."""

    def to_internal_value(self, value):
        parsed = parse_datetime(value) if isinstance(value, str) else None
        if parsed is not None and parsed.tzinfo is None:
            raise serializers.ValidationError("Give the time with its offset, e.g. 2026-12-05T18:00:00Z.")
        return super().to_internal_value(value)


class WorkloadCreateSerializer(StrictSerializer):
    name = StrictCharField(max_length=200)
    requirements = RequirementsSerializer()
    config = ConfigSerializer(required=False)
    recovery_policy = serializers.ChoiceField(choices=RecoveryPolicy.choices, default=RecoveryPolicy.MIGRATE)
    expected_duration_seconds = StrictIntegerField(
        min_value=1,
        max_value=MAX_DURATION_SECONDS,
        required=False,
        help_text="Compute time the job needs, in seconds. Needed for a deadline.",
    )
    deadline = AwareDateTimeField(
        required=False,
        help_text="When the job must have finished: an ISO 8601 time with its offset (e.g. 2026-12-05T18:00:00Z). "
        "At least expected_duration_seconds plus one launch's overhead (LAUNCH_OVERHEAD_SECONDS) from now.",
    )
    on_demand_fallback = StrictBooleanField(
        required=False,
        help_text="May it run on on-demand capacity when spot cannot make the deadline? Default: yes when a "
        "deadline is set, no otherwise.",
    )

    def validate_name(self, name: str) -> str:
        name = name.strip()
        if not name:
            raise serializers.ValidationError("May not be blank.")
        # Unicode control (Cc: C0, DEL, C1) and format (Cf: bidi overrides, zero-width) characters
        # would let a name hide or reorder what an operator reads in the console and the logs.
        bad = next((ch for ch in name if unicodedata.category(ch) in ("Cc", "Cf")), None)
        if bad is not None:
            raise serializers.ValidationError(f"May not contain control or format characters (found U+{ord(bad):04X}).")
        return name

    def validate_deadline(self, deadline: datetime) -> datetime:
        if deadline <= timezone.now():
            raise serializers.ValidationError("The deadline is in the past.")
        return deadline

    def _validate_deadline_fits(self, attrs) -> None:
        deadline, duration = attrs.get("deadline"), attrs.get("expected_duration_seconds")
        if deadline is None:
            return
        if duration is None:
            raise serializers.ValidationError(
                {"expected_duration_seconds": ["A deadline needs the job's expected duration."]}
            )
        earliest = timezone.now() + timedelta(seconds=duration + settings.LAUNCH_OVERHEAD_SECONDS)
        if deadline < earliest:
            raise serializers.ValidationError(
                {
                    "deadline": [
                        f"Too soon: the job needs {duration} s plus {settings.LAUNCH_OVERHEAD_SECONDS} s to launch, "
                        f"so the earliest deadline is {earliest.isoformat(timespec='seconds')}."
                    ]
                }
            )

    def validate(self, attrs):
        self._validate_deadline_fits(attrs)
        attrs.setdefault("on_demand_fallback", attrs.get("deadline") is not None)
        # Stored as JSON in its normalised form: defaults filled, decimals as strings.
        config = attrs.get("config") or ConfigSerializer().run_validation({})
        config.setdefault("storage", StorageSettingsSerializer().run_validation({}))
        attrs["requirements"] = RequirementsSerializer().to_representation(attrs["requirements"])
        attrs["config"] = ConfigSerializer().to_representation(config)
        return attrs


#: Workloads one batch create takes (its body is also held to API_MAX_BODY_BYTES).
MAX_BATCH = 500


class WorkloadBatchCreateSerializer(StrictSerializer):
    workloads = WorkloadCreateSerializer(many=True, min_length=1, max_length=MAX_BATCH)


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
            "market",
            "spot_price",
            "on_demand_price",
            "created_at",
            "healthy_at",
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
            "status_reason",
            "next_attempt_at",
            "expected_duration_seconds",
            "deadline",
            "on_demand_fallback",
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
        help_text="Storage usage: used_bytes, reserved_bytes (open upload URLs), quota_bytes, retention_days, "
        "object_count; null when storage is off."
    )

    progress_seconds = serializers.SerializerMethodField(
        help_text="Compute done: what the workload reported, or its run time since its instance became healthy "
        "(restored to the checkpoint's value after a migration)."
    )
    remaining_seconds = serializers.SerializerMethodField(
        help_text="expected_duration_seconds - progress_seconds, never below 0; null without an expected duration."
    )
    on_track = serializers.SerializerMethodField(
        help_text="Will it make its deadline on the present plan (remaining work, plus one launch when nothing runs, "
        "fits before the deadline)? Null without a deadline or once it has ended."
    )
    market = serializers.SerializerMethodField(
        help_text='"spot" or "on_demand": how its current instance is bought; null without one.'
    )

    class Meta(WorkloadSerializer.Meta):
        fields = [
            *WorkloadSerializer.Meta.fields,
            "progress_seconds",
            "remaining_seconds",
            "on_track",
            "market",
            "access_token",
            "storage",
            "instances",
            "events",
        ]
        read_only_fields = fields

    def get_fields(self):
        # The sections apps above workloads add (billing: "cost") go before the instances.
        fields = {}
        for name, field in super().get_fields().items():
            if name == "instances":
                fields.update({section: make_field() for section, make_field in DETAIL_SECTIONS.items()})
            fields[name] = field
        return fields

    def _progress(self, workload) -> Progress:
        cache = self.context.setdefault("progress", {})
        if workload.id not in cache:
            cache[workload.id] = workload_progress(workload=workload)
        return cache[workload.id]

    def get_progress_seconds(self, workload) -> float:
        return self._progress(workload).progress_seconds

    def get_remaining_seconds(self, workload) -> float | None:
        return self._progress(workload).remaining_seconds

    def get_on_track(self, workload) -> bool | None:
        return self._progress(workload).on_track

    def get_market(self, workload) -> str | None:
        return self._progress(workload).market

    def get_storage(self, workload) -> dict | None:
        return storage_summary_get(workload_id=workload.id)

    def get_access_token(self, workload) -> str | None:
        if workload.config.get("access") != "private":
            return None
        return access_token_for(workload.id)


# --- logs -------------------------------------------------------------------------------------

MAX_POSITION = 2**63 - 1


class LogsQuerySerializer(StrictSerializer):
    after = serializers.IntegerField(
        min_value=0, max_value=MAX_POSITION, default=0, help_text="Lines with a position above this."
    )
    limit = serializers.IntegerField(min_value=1, max_value=1000, default=500, help_text="At most this many lines.")
    follow = serializers.ChoiceField(
        choices=("1", "true", "0", "false"),
        default="0",
        help_text="1 or true: server-sent events, one per line, until the workload ends.",
    )


class LogLineSerializer(serializers.Serializer):
    position = serializers.IntegerField(help_text="Per workload, strictly increasing (not gap-free).")
    time = serializers.DateTimeField(help_text="When the line was collected (a marker: when it was written).")
    instance_id = serializers.CharField(help_text="The provider's id of the instance that wrote it.")
    provider = serializers.CharField()
    stream = serializers.ChoiceField(
        choices=("output", "marker"),
        help_text="output: the instance's stdout and stderr; marker: the workload moved to another instance.",
    )
    text = serializers.CharField(help_text="The line without its newline, at most 4096 characters.")


class LogPageSerializer(serializers.Serializer):
    workload_id = serializers.UUIDField()
    lines = LogLineSerializer(many=True)
    next_after = serializers.IntegerField(help_text="Ask with after=next_after for what follows.")
    more = serializers.BooleanField(help_text="More lines are stored after next_after now: keep paging.")
    ended = serializers.BooleanField(
        help_text="The workload is TERMINATED or FAILED and its last lines are all here: nothing will follow."
    )
