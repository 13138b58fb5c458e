"""Reads for workloads, customers and keys."""

from __future__ import annotations

from uuid import UUID

from django.db.models import Prefetch, QuerySet

from accounts.models import Customer
from workloads.models import (
    WorkflowRun,
    WorkflowStep,
    Workload,
    WorkloadEvent,
    WorkloadInstance,
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
    return (
        WorkflowRun.objects.filter(workload=workload)
        .prefetch_related(Prefetch("steps", queryset=WorkflowStep.objects.order_by("position")))
        .order_by("created_at")
    )
