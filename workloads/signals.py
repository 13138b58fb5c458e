"""What the workloads app tells the layers above it (docs/architecture.md §12).

Billing sits above workloads (it bills their instances), so workloads never
imports it; it sends these signals and billing's receivers (``billing/receivers.py``,
connected in ``BillingConfig.ready``) act on them, in the sender's transaction.

* ``workload_admission(customer=...)``: sent before a workload is stored. A
  receiver refuses it by raising a ``DomainError`` (billing: ``BudgetExceeded``,
  402), which reaches the caller unchanged.
* ``instance_released(instance=...)``: sent once an instance has ended (its
  ``terminated_at`` set) and must be billed; sending it again is harmless. A
  receiver may return a plain dict describing what it recorded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.dispatch import Signal

if TYPE_CHECKING:
    from accounts.models import Customer
    from workloads.models import WorkloadInstance

workload_admission = Signal()
instance_released = Signal()


def workload_admit(*, customer: Customer) -> None:
    """Ask every receiver whether ``customer`` may start a workload now (raises to refuse)."""
    workload_admission.send(sender="workloads", customer=customer)


def instance_release_announce(*, instance: WorkloadInstance) -> list[dict[str, Any]]:
    """Tell the receivers ``instance`` has ended; what they recorded, as plain dicts."""
    responses = instance_released.send(sender="workloads", instance=instance)
    return [response for _, response in responses if isinstance(response, dict)]
