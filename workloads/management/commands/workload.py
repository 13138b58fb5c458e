"""Submit, terminate and show workloads from the shell, for operators and for trying things by hand."""

from __future__ import annotations

import json
import uuid

from django.core.management.base import BaseCommand, CommandError, CommandParser
from rest_framework.exceptions import ValidationError

from accounts.models import Customer
from arbitrage.api.errors import _flatten
from arbitrage.errors import DomainError
from workloads import selectors, services
from workloads.api.serializers import WorkloadCreateSerializer
from workloads.models import Workload


class Command(BaseCommand):
    help = "Submit, terminate or show a workload (with its workflow step timeline)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        submit = sub.add_parser("submit", help="submit a workload for a customer")
        submit.add_argument("--customer", required=True, help="customer id or exact name")
        submit.add_argument("--name", required=True)
        submit.add_argument("--vcpu", type=int, required=True)
        submit.add_argument("--memory-gb", type=float, required=True)
        submit.add_argument("--gpu-count", type=int, default=0)
        submit.add_argument("--gpu-type", default=None)
        submit.add_argument("--provider", action="append", dest="providers", help="allowed provider (repeatable)")
        submit.add_argument("--region", action="append", dest="regions", help="allowed region (repeatable)")
        submit.add_argument("--max-price", default=None, help="max price per hour, e.g. 0.20")
        submit.add_argument("--storage", action="store_true", help="enable workload storage")
        submit.add_argument("--recovery", choices=["migrate", "terminate"], default="migrate")
        terminate = sub.add_parser("terminate", help="terminate (or cancel) a workload")
        terminate.add_argument("workload_id")
        terminate.add_argument("--reason", default="Terminated by an operator.")
        show = sub.add_parser("show", help="show a workload with its step timeline")
        show.add_argument("workload_id")

    def handle(self, *args, action: str, **options) -> None:
        try:
            getattr(self, f"_{action}")(**options)
        except DomainError as error:
            raise CommandError(error.message) from None

    def _submit(self, *, customer: str, name: str, **options) -> None:
        owner = _customer(customer)
        requirements = {"vcpu": options["vcpu"], "memory_gb": options["memory_gb"], "gpu_count": options["gpu_count"]}
        if options["gpu_type"]:
            requirements["gpu_type"] = options["gpu_type"]
        for key in ("providers", "regions"):
            if options[key]:
                requirements[key] = options[key]
        if options["max_price"]:
            requirements["max_price_per_hour"] = options["max_price"]
        body = {
            "name": name,
            "requirements": requirements,
            "config": {"storage": {"enabled": options["storage"]}},
            "recovery_policy": options["recovery"],
        }
        serializer = WorkloadCreateSerializer(data=body)
        try:
            serializer.is_valid(raise_exception=True)
        except ValidationError as error:
            problems = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in _flatten(error.detail).items())
            raise CommandError(problems) from None
        workload, _ = services.workload_create(customer=owner, **serializer.validated_data)
        self.stdout.write(f"submitted {workload.id} ({workload.name}): {workload.status}")

    def _terminate(self, *, workload_id: str, reason: str, **options) -> None:
        workload = _workload(workload_id)
        workload = services.workload_terminate(workload_id=workload.id, reason=reason)
        self.stdout.write(f"{workload.id}: {workload.status}")

    def _show(self, *, workload_id: str, **options) -> None:
        workload = _workload(workload_id)
        self.stdout.write(f"workload  {workload.id}  {workload.name}")
        self.stdout.write(f"status    {workload.status}  (customer {workload.customer.name})")
        if workload.failure_reason:
            self.stdout.write(f"failure   {workload.failure_reason}")
        for instance in workload.instances.all():
            self.stdout.write(
                f"instance  {instance.provider}/{instance.region}/{instance.availability_zone} "
                f"{instance.instance_type} {instance.instance_id} {instance.status} "
                f"${instance.spot_price}/h"
            )
        for run in selectors.workflow_runs(workload=workload):
            self.stdout.write(f"\n{run.kind} run {run.id}: {run.status}" + (f" — {run.error}" if run.error else ""))
            self.stdout.write(f"  {'step':<28} {'status':<10} {'tries':>5} {'seconds':>8}  result / error")
            for step in run.steps.all():
                seconds = (
                    f"{(step.finished_at - step.started_at).total_seconds():.2f}"
                    if step.started_at and step.finished_at
                    else "-"
                )
                outcome = step.error or (json.dumps(step.result, default=str)[:80] if step.result is not None else "")
                self.stdout.write(f"  {step.name:<28} {step.status:<10} {step.attempts:>5} {seconds:>8}  {outcome}")


def _as_uuid(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def _customer(reference: str) -> Customer:
    customer_id = _as_uuid(reference)
    match = Customer.objects.filter(id=customer_id).first() if customer_id else None
    match = match or Customer.objects.filter(name=reference).first()
    if match is None:
        raise CommandError(f"--customer: no customer with id or name {reference!r}")
    return match


def _workload(reference: str) -> Workload:
    workload_id = _as_uuid(reference)
    workload = Workload.objects.select_related("customer").filter(id=workload_id).first() if workload_id else None
    if workload is None:
        raise CommandError(f"no workload with id {reference!r}")
    return workload
