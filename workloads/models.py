"""Workloads, their instances and their lifecycle state machine (docs/architecture.md §5).

Column names follow the source design where it names them (``workloads``,
``workload_instances``, ``workload_routing``).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from django.conf import settings
from django.db import models
from django_fsm import ConcurrentTransitionMixin, FSMField, transition

from placement.clouds.base import Market

MARKETS = [(Market.SPOT.value, "spot"), (Market.ON_DEMAND.value, "on demand")]


class WorkloadStatus(models.TextChoices):
    PENDING = "PENDING"
    PROVISIONING = "PROVISIONING"
    RUNNING = "RUNNING"
    FAILED = "FAILED"
    STOPPING = "STOPPING"
    INTERRUPTED = "INTERRUPTED"
    UNHEALTHY = "UNHEALTHY"
    TERMINATED = "TERMINATED"


class RecoveryPolicy(models.TextChoices):
    MIGRATE = "migrate"
    TERMINATE = "terminate"


S = WorkloadStatus

# Workload.status_reason while no pool has capacity and it waits to retry.
WAITING_FOR_CAPACITY = "waiting_for_capacity"


class Workload(ConcurrentTransitionMixin, models.Model):
    """A customer's workload and its lifecycle (docs/architecture.md §5).

    ``status`` is protected: it changes only through the transition methods
    below, and those are called only by ``workloads.services.workload_transition``,
    which locks the row and records the event.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    customer = models.ForeignKey("accounts.Customer", on_delete=models.PROTECT, related_name="workloads")
    name = models.CharField(max_length=200)
    status = FSMField(default=S.PENDING, choices=S.choices, protected=True, db_index=True)
    requirements = models.JSONField(default=dict)
    config = models.JSONField(default=dict)
    recovery_policy = models.CharField(max_length=16, choices=RecoveryPolicy.choices, default=RecoveryPolicy.MIGRATE)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    request_fingerprint = models.CharField(max_length=64, blank=True, editable=False)
    capacity_reserved_at = models.DateTimeField(
        null=True, blank=True, help_text="When validate-quotas counted it against the customer's quota."
    )
    started_at = models.DateTimeField(null=True, blank=True)
    terminated_at = models.DateTimeField(null=True, blank=True)
    termination_reason = models.TextField(blank=True)
    failure_reason = models.TextField(blank=True)
    # What the job needs (docs/architecture.md §15): all optional.
    expected_duration_seconds = models.PositiveIntegerField(
        null=True, blank=True, help_text="Compute time the job needs to finish."
    )
    deadline = models.DateTimeField(null=True, blank=True, help_text="When the job must have finished.")
    on_demand_fallback = models.BooleanField(
        default=False, help_text="May run on on-demand capacity when spot cannot make the deadline."
    )
    # How far it has got: the last value the workload reported (or the run time credited at
    # the last checkpoint), as of progress_updated_at.
    progress_seconds = models.FloatField(default=0.0)
    progress_updated_at = models.DateTimeField(null=True, blank=True)
    progress_reported = models.BooleanField(
        default=False, help_text="The workload reports its own progress (else run time since healthy counts)."
    )
    # Why it is where it is, beyond its state: "waiting_for_capacity" while no pool has room.
    status_reason = models.CharField(max_length=64, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "workloads"
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["customer", "status"])]
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="workload_idempotency_key_per_customer",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"

    @property
    def endpoint(self) -> str:
        return f"{self.id}.workloads.{settings.WORKLOAD_DOMAIN}"

    # --- transitions (docs/architecture.md §5); bodies stay empty, effects live in services.

    @transition(field=status, source=S.PENDING, target=S.PROVISIONING)
    def place(self) -> None:
        """Placement found."""

    @transition(field=status, source=S.PROVISIONING, target=S.FAILED)
    def fail_provisioning(self) -> None:
        """Provisioning failed or timed out."""

    @transition(field=status, source=S.PROVISIONING, target=S.RUNNING)
    def mark_ready(self) -> None:
        """Instance ready and routing registered."""

    @transition(field=status, source=S.RUNNING, target=S.STOPPING)
    def user_terminate(self) -> None:
        """The customer or an operator asked to terminate."""

    @transition(field=status, source=S.RUNNING, target=S.INTERRUPTED)
    def spot_interrupt(self) -> None:
        """The cloud is reclaiming the spot instance."""

    @transition(field=status, source=S.RUNNING, target=S.UNHEALTHY)
    def health_check_fail(self) -> None:
        """N consecutive failed health checks."""

    @transition(field=status, source=[S.STOPPING, S.INTERRUPTED, S.UNHEALTHY], target=S.TERMINATED)
    def cleanup_complete(self) -> None:
        """The termination workflow finished."""

    @transition(field=status, source=S.PENDING, target=S.FAILED)
    def reject(self) -> None:
        """Quota exceeded or no feasible placement."""

    @transition(field=status, source=[S.PENDING, S.PROVISIONING], target=S.STOPPING)
    def cancel(self) -> None:
        """The customer terminated the workload before it ran."""

    @transition(field=status, source=[S.INTERRUPTED, S.UNHEALTHY], target=S.PROVISIONING)
    def recover(self) -> None:
        """Re-placement by the migration workflow."""

    @transition(field=status, source=S.FAILED, target=S.PENDING)
    def retry(self) -> None:
        """An operator retries a failed provisioning as a new run."""


TRANSITIONS: tuple[str, ...] = (
    "place",
    "fail_provisioning",
    "mark_ready",
    "user_terminate",
    "spot_interrupt",
    "health_check_fail",
    "cleanup_complete",
    "reject",
    "cancel",
    "recover",
    "retry",
)


class InstanceStatus(models.TextChoices):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    TERMINATED = "TERMINATED"
    FAILED = "FAILED"


class WorkloadInstance(models.Model):
    """One instance segment of a workload: one cloud instance, bought at one price."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workload = models.ForeignKey(Workload, on_delete=models.CASCADE, related_name="instances")
    provider = models.CharField(max_length=16, db_index=True)
    region = models.CharField(max_length=64)
    availability_zone = models.CharField(max_length=64, blank=True)
    instance_type = models.CharField(max_length=64)
    instance_id = models.CharField(max_length=255, blank=True, help_text="The provider's id for the instance.")
    public_ip = models.CharField(max_length=255, blank=True)
    status = models.CharField(max_length=16, choices=InstanceStatus.choices, default=InstanceStatus.PENDING)
    market = models.CharField(max_length=16, choices=MARKETS, default=Market.SPOT, db_index=True)
    spot_price = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        help_text="Price per hour it was bought at: the spot price, or the on-demand price for an on-demand instance.",
    )
    on_demand_price = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    launched_at = models.DateTimeField(
        null=True, blank=True, help_text="When the cloud launched it, as the provider reports it: its bill starts here."
    )
    healthy_at = models.DateTimeField(null=True, blank=True, help_text="When its workload first answered healthy.")
    preempted_at = models.DateTimeField(null=True, blank=True, help_text="When the cloud reclaimed it, if it did.")
    reclaimed_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the cloud took it back, as the cloud said (its warning's deadline, or when it was seen "
        "gone): its bill ends here, even if releasing it took longer.",
    )
    terminated_at = models.DateTimeField(null=True, blank=True)
    # When its lifetime went into the pool's statistics (once: placement.PoolStats).
    observed_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        db_table = "workload_instances"
        ordering = ["created_at"]
        indexes = [models.Index(fields=["workload", "status"])]

    def __str__(self) -> str:
        return f"{self.provider}/{self.region}/{self.instance_type} {self.instance_id}"

    @property
    def billed_until(self) -> datetime | None:
        """Where its segment ends: when it was released, or earlier when the cloud took it back first."""
        if self.terminated_at is None or self.reclaimed_at is None:
            return self.terminated_at
        return max(min(self.terminated_at, self.reclaimed_at), self.billed_from)

    @property
    def billed_from(self) -> datetime:
        """Where its segment starts: the cloud's launch time (providers bill from it), else when it was recorded."""
        return self.launched_at or self.created_at


class WorkloadRouting(models.Model):
    """Where a workload's endpoint currently points; the KV is a cache of this."""

    workload = models.OneToOneField(Workload, on_delete=models.CASCADE, primary_key=True, related_name="routing")
    endpoint = models.CharField(max_length=255)
    provider = models.CharField(max_length=16)
    region = models.CharField(max_length=64)
    instance_id = models.CharField(max_length=255)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "workload_routing"

    def __str__(self) -> str:
        return f"{self.workload_id} → {self.endpoint}"


class WorkloadEvent(models.Model):
    """The workload's timeline: every transition and workflow step."""

    class Kind(models.TextChoices):
        TRANSITION = "transition"
        STEP = "step"
        INFO = "info"

    id = models.BigAutoField(primary_key=True)
    workload = models.ForeignKey(Workload, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    name = models.CharField(max_length=64, help_text="Transition or step name.")
    from_status = models.CharField(max_length=16, blank=True)
    to_status = models.CharField(max_length=16, blank=True)
    message = models.TextField(blank=True)
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        db_table = "workload_events"
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        if self.kind == self.Kind.TRANSITION:
            return f"{self.name}: {self.from_status} → {self.to_status}"
        return f"{self.kind} {self.name}"


# --- durable workflows (docs/architecture.md §6) -------------------------------------------


class WorkflowKind(models.TextChoices):
    PROVISION = "provision"
    TERMINATE = "terminate"
    MIGRATE = "migrate"


class RunStatus(models.TextChoices):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class WorkflowRun(models.Model):
    """One run of a workflow for a workload; its steps are rows of ``WorkflowStep``."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=16, choices=WorkflowKind.choices)
    workload = models.ForeignKey(Workload, on_delete=models.CASCADE, related_name="workflow_runs")
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.RUNNING, db_index=True)
    payload = models.JSONField(default=dict, blank=True, help_text="The run's input (reason, excluded pools, ...).")
    failed_step = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    # Bumped when the beat task re-enqueues a lost chain; tasks of older chains stop.
    chain_generation = models.PositiveIntegerField(default=0)
    heartbeat_at = models.DateTimeField(auto_now_add=True, help_text="Last time a step task touched the run.")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "workflow_runs"
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "heartbeat_at"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.workload_id} ({self.status})"


class WorkflowStep(models.Model):
    run = models.ForeignKey(WorkflowRun, on_delete=models.CASCADE, related_name="steps")
    name = models.CharField(max_length=64)
    position = models.PositiveSmallIntegerField()
    status = models.CharField(max_length=16, choices=StepStatus.choices, default=StepStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0, help_text="Executions, including re-checks of a wait.")
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "workflow_steps"
        ordering = ["run", "position"]
        constraints = [models.UniqueConstraint(fields=["run", "name"], name="workflow_step_name_per_run")]

    def __str__(self) -> str:
        return f"{self.position}. {self.name} ({self.status})"


# --- health monitoring and notifications ---------------------------------------------


class HealthMonitor(models.Model):
    """What the health sweep checks for a workload (start-health-monitoring)."""

    workload = models.OneToOneField(Workload, on_delete=models.CASCADE, primary_key=True, related_name="monitor")
    active = models.BooleanField(default=True, db_index=True)
    instance_id = models.CharField(max_length=255)
    provider = models.CharField(max_length=16)
    region = models.CharField(max_length=64)
    endpoint = models.CharField(max_length=255, help_text="host:port of the health-check port.")
    health_check_port = models.PositiveIntegerField(default=8080)
    consecutive_failures = models.PositiveIntegerField(default=0)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_ok_at = models.DateTimeField(null=True, blank=True)
    last_latency_ms = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "health_monitors"

    def __str__(self) -> str:
        return f"monitor {self.workload_id} ({'active' if self.active else 'stopped'})"


class NotificationType(models.TextChoices):
    WORKLOAD_READY = "WORKLOAD_READY"
    WORKLOAD_FAILED = "WORKLOAD_FAILED"
    WORKLOAD_INTERRUPTED = "WORKLOAD_INTERRUPTED"
    WORKLOAD_MIGRATED = "WORKLOAD_MIGRATED"
    WORKLOAD_TERMINATED = "WORKLOAD_TERMINATED"
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"
    WORKLOAD_WAITING = "WORKLOAD_WAITING"  # no pool has capacity: it waits and retries


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    NO_WEBHOOK = "no_webhook"


class Notification(models.Model):
    """A message to a customer, kept whether or not it has a webhook to deliver it to."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    customer = models.ForeignKey("accounts.Customer", on_delete=models.CASCADE, related_name="notifications")
    workload = models.ForeignKey(Workload, on_delete=models.CASCADE, related_name="notifications", null=True)
    type = models.CharField(max_length=32, choices=NotificationType.choices)
    payload = models.JSONField(default=dict)
    dedupe_key = models.CharField(max_length=64, blank=True)
    delivery_status = models.CharField(
        max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING, db_index=True
    )
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "notifications"
        ordering = ["-created_at"]
        constraints = [
            # One notification of a kind per workflow run step: a re-run step does not notify twice.
            models.UniqueConstraint(fields=["workload", "type", "dedupe_key"], name="notification_once"),
            # About the customer's account (no workload, e.g. BUDGET_EXCEEDED): once per customer.
            models.UniqueConstraint(
                fields=["customer", "type", "dedupe_key"],
                condition=models.Q(workload__isnull=True),
                name="customer_notification_once",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} → {self.customer} ({self.delivery_status})"


# --- the workload's output (its log) ---------------------------------------------------


class LogStream(models.TextChoices):
    OUTPUT = "output"  # the instance's stdout and stderr
    MARKER = "marker"  # written by the control plane: the workload moved to another instance


class WorkloadLogLine(models.Model):
    """One line of a workload's log: one stream per workload, across all its instances.

    ``position`` is per workload and strictly increasing (gaps are allowed); it is given
    out under the workload row's lock, so lines read in position order are in the order
    they were stored.
    """

    MAX_TEXT = 4096  # characters; a longer line is split

    id = models.BigAutoField(primary_key=True)
    workload = models.ForeignKey(Workload, on_delete=models.CASCADE, related_name="log_lines")
    position = models.BigIntegerField()
    time = models.DateTimeField(help_text="When the line was collected (a marker: when it was written).")
    instance_id = models.CharField(max_length=255, blank=True, help_text="The provider's id for the instance.")
    provider = models.CharField(max_length=16, blank=True)
    stream = models.CharField(max_length=16, choices=LogStream.choices, default=LogStream.OUTPUT)
    text = models.TextField()

    class Meta:
        db_table = "workload_log_lines"
        ordering = ["workload", "position"]
        constraints = [models.UniqueConstraint(fields=["workload", "position"], name="workload_log_line_position")]

    def __str__(self) -> str:
        return f"{self.workload_id} #{self.position} [{self.stream}] {self.text[:60]}"


class WorkloadLogCursor(models.Model):
    """How far one instance's console output has been collected: its byte offset, and whether to the end."""

    instance = models.OneToOneField(
        WorkloadInstance, on_delete=models.CASCADE, primary_key=True, related_name="log_cursor"
    )
    offset = models.BigIntegerField(default=0, help_text="Bytes of its output stored as lines so far.")
    collected_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(
        null=True, blank=True, help_text="When its output was collected after the instance ended: nothing follows."
    )

    class Meta:
        db_table = "workload_log_cursors"

    def __str__(self) -> str:
        return f"log cursor of {self.instance_id} at {self.offset}"
