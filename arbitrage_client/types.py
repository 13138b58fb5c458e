"""The shapes the client sends and reads, as the API's OpenAPI schema names them.

Only what the client and the CLI use is declared; answers carry more. The drift test
(tests/client/test_schema_drift.py) checks every key here against ``/api/schema/``.
Money is a decimal string in USD; times are ISO 8601 strings.
"""

from __future__ import annotations

from typing import Any, TypedDict

# --- requests --------------------------------------------------------------------------------------


class Requirements(TypedDict, total=False):
    vcpu: int
    memory_gb: float
    gpu_count: int
    gpu_type: str | None
    architecture: str
    providers: list[str]
    regions: list[str]
    zones: list[str]
    max_price_per_hour: str


class StorageSettings(TypedDict, total=False):
    enabled: bool
    quota_gb: int
    retention_days: int


class WorkloadConfig(TypedDict, total=False):
    image_id: str
    command: list[str]
    env: dict[str, str]
    health_check_port: int
    access: str
    storage: StorageSettings


class WorkloadRequest(TypedDict, total=False):
    name: str
    requirements: Requirements
    config: WorkloadConfig
    recovery_policy: str
    expected_duration_seconds: int
    deadline: str
    on_demand_fallback: bool


class QuoteRequest(TypedDict, total=False):
    requirements: Requirements
    limit: int


class RebalanceRequest(TypedDict, total=False):
    min_saving_pct: str


# --- answers ---------------------------------------------------------------------------------------


class Workload(TypedDict, total=False):
    id: str
    name: str
    status: str
    endpoint: str
    requirements: dict[str, Any]
    config: dict[str, Any]
    recovery_policy: str
    failure_reason: str
    termination_reason: str
    status_reason: str
    next_attempt_at: str | None
    deadline: str | None
    expected_duration_seconds: int | None
    created_at: str
    terminated_at: str | None


class Instance(TypedDict, total=False):
    provider: str
    region: str
    availability_zone: str
    instance_type: str
    instance_id: str
    status: str
    market: str
    spot_price: str
    on_demand_price: str
    created_at: str
    terminated_at: str | None


class Segment(TypedDict, total=False):
    provider: str
    region: str
    instance_type: str
    market: str
    started_at: str
    ended_at: str | None
    hours: str
    cost: str
    on_demand_cost: str


class WorkloadCost(TypedDict, total=False):
    currency: str
    spend: str
    on_demand_equivalent: str
    saving: str
    segments: list[Segment]


class WorkloadEvent(TypedDict, total=False):
    kind: str
    name: str
    to_status: str
    message: str
    created_at: str


class WorkloadDetail(Workload, total=False):
    progress_seconds: float
    remaining_seconds: float | None
    on_track: bool | None
    market: str | None
    cost: WorkloadCost
    instances: list[Instance]
    events: list[WorkloadEvent]


class WorkloadPage(TypedDict, total=False):
    count: int
    next: str | None
    results: list[Workload]


class RebalanceStarted(TypedDict, total=False):
    status: str
    saving_pct: str
    offer: dict[str, Any]


class Candidate(TypedDict, total=False):
    rank: int
    provider: str
    region: str
    availability_zone: str
    instance_type: str
    vcpu: int
    memory_gb: float
    gpu_count: int
    gpu_type: str | None
    spot_price: str
    on_demand_price: str
    saving_pct: str
    expected_cost_per_hour: str


class Quote(TypedDict, total=False):
    count: int
    candidates: list[Candidate]


class ProviderSummary(TypedDict, total=False):
    provider: str
    instance_hours: str
    spend: str
    on_demand_equivalent: str
    saving: str


class BillingSummary(TypedDict, total=False):
    month: str
    currency: str
    instance_hours: str
    spend: str
    on_demand_equivalent: str
    saving: str
    saving_percent: str | None
    budget: str | None
    budget_remaining: str | None
    providers: list[ProviderSummary]


class LogLine(TypedDict, total=False):
    position: int
    time: str
    instance_id: str
    provider: str
    stream: str  # "output" or "marker"
    text: str


class LogPage(TypedDict, total=False):
    workload_id: str
    lines: list[LogLine]
    next_after: int
    more: bool
    ended: bool
