"""Instance statuses read in batches while many workloads wait on one region.

A provisioning run checks its new instance every few seconds (wait-for-instance). With thousands
starting at once that is thousands of status calls, which the clouds throttle. Where a cloud
describes many instances in one call (``CloudAdapter.describes_in_batches``: AWS DescribeInstances
takes 1,000 ids), one run's check reads every instance still starting in its provider and region
and leaves their statuses in the routing KV for ``BATCH_FRESH_SECONDS``: the other runs' checks in
that time are answered from there. An instance whose create operation is still followed (GCP, Azure)
is always asked about on its own, with its operation.
"""

from __future__ import annotations

from django.core.cache import caches

from placement.clouds.base import InstanceInfo, InstanceNotFound, get_cloud
from workloads.models import WorkloadInstance
from workloads.workflows.engine import scaled

# Shorter than the wait steps' re-check (5 s): a status is never read older than half a re-check.
BATCH_FRESH_SECONDS = 2
BATCH_LIMIT = 10_000  # instances read in one go (the adapter splits them into calls)


def _key(provider: str, region: str, instance_id: str) -> str:
    return f"instance-status:{provider}:{region}:{instance_id}"


def instance_status_read(*, provider: str, region: str, instance_id: str, operation: str = "") -> InstanceInfo:
    """The instance's current status, from a fresh batch when one has it; raises ``InstanceNotFound``."""
    cloud = get_cloud(provider)
    if operation or not cloud.describes_in_batches:
        return cloud.get_instance_status(instance_id, region, operation=operation)
    kv = caches["routing"]
    cached = kv.get(_key(provider, region, instance_id))
    if cached is not None:
        return cached
    starting = WorkloadInstance.objects.filter(
        provider=provider, region=region, terminated_at__isnull=True, healthy_at__isnull=True
    ).values_list("instance_id", flat=True)[:BATCH_LIMIT]
    statuses = cloud.get_instance_statuses([instance_id, *starting], region)
    others = {_key(provider, region, i): info for i, info in statuses.items() if i != instance_id}
    if others:
        kv.set_many(others, timeout=max(scaled(BATCH_FRESH_SECONDS), 0.05))
    if instance_id not in statuses:
        raise InstanceNotFound(f"{provider} has no instance {instance_id} in {region}", provider=provider)
    return statuses[instance_id]
