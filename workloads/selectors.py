"""Reads for workloads, customers and keys."""

from __future__ import annotations

import hashlib
from uuid import UUID

from django.db.models import Prefetch, QuerySet

from workloads.models import ApiKey, Customer, Workload, WorkloadEvent, WorkloadInstance


def api_key_hash(raw_key: str) -> str:
    # Keys are 256-bit random tokens, so a plain SHA-256 is enough to make the
    # stored hash useless to an attacker; no slow KDF needed on every request.
    return hashlib.sha256(raw_key.encode()).hexdigest()


def api_key_get_active(*, raw_key: str) -> ApiKey | None:
    """The unrevoked key matching ``raw_key``, with its customer, or None."""
    return (
        ApiKey.objects.select_related("customer")
        .filter(key_hash=api_key_hash(raw_key), revoked_at__isnull=True)
        .first()
    )


def workload_list(*, customer: Customer, status: str | None = None) -> QuerySet[Workload]:
    workloads = Workload.objects.filter(customer=customer)
    if status:
        workloads = workloads.filter(status=status)
    return workloads.order_by("-created_at", "id")


def workload_get(*, customer: Customer, workload_id: UUID | str) -> Workload | None:
    """The customer's workload with its instances and timeline, or None (also for another customer's)."""
    return (
        Workload.objects.filter(customer=customer, id=workload_id)
        .prefetch_related(
            Prefetch("instances", queryset=WorkloadInstance.objects.order_by("created_at")),
            Prefetch("events", queryset=WorkloadEvent.objects.order_by("created_at", "id")),
        )
        .select_related("routing")
        .first()
    )


def workload_by_idempotency_key(*, customer: Customer, idempotency_key: str) -> Workload | None:
    return Workload.objects.filter(customer=customer, idempotency_key=idempotency_key).first()


def workflow_runs(*, workload: Workload):
    from workloads.models import WorkflowRun, WorkflowStep

    return (
        WorkflowRun.objects.filter(workload=workload)
        .prefetch_related(Prefetch("steps", queryset=WorkflowStep.objects.order_by("position")))
        .order_by("created_at")
    )
