"""Instance statuses read in batches while many workloads wait on one region.

A provisioning run checks its new instance while it boots (wait-for-instance). With thousands
starting at once that would be thousands of status calls, which the clouds throttle. Where a cloud
describes many instances in one call (``CloudAdapter.describes_in_batches``: AWS DescribeInstances
takes 1,000 ids), the readiness sweep reads every instance still starting in a provider and region
together and leaves their statuses in the routing KV (``instance_statuses_read``): a run's own
check is answered from there, and only reads its one instance when the KV has nothing fresh for it
(right after its create, or when no sweep runs). An instance whose create operation is still
followed (GCP, Azure) is always asked about on its own, with its operation.
"""

from __future__ import annotations

from django.core.cache import caches

from placement.clouds.base import InstanceInfo, InstanceNotFound, InstanceState, get_cloud
from workloads.workflows.engine import scaled

# Shorter than the wait steps' re-check (5 s): a status is never read older than half a re-check.
BATCH_FRESH_SECONDS = 2
# An instance seen started (or ended) is kept longer: a run woken for it may wait that long in the
# queue behind other steps, and what follows checks the workload itself.
SETTLED_FRESH_SECONDS = 60


def _key(provider: str, region: str, instance_id: str) -> str:
    return f"instance-status:{provider}:{region}:{instance_id}"


def instance_statuses_read(*, provider: str, region: str, instance_ids: list[str]) -> dict[str, InstanceInfo]:
    """Read many instances of one region in one batch and leave their statuses in the routing KV."""
    statuses = get_cloud(provider).get_instance_statuses(instance_ids, region)
    kv = caches["routing"]
    for pending, fresh in ((True, BATCH_FRESH_SECONDS), (False, SETTLED_FRESH_SECONDS)):
        entries = {
            _key(provider, region, i): info
            for i, info in statuses.items()
            if (info.state is InstanceState.PENDING) == pending
        }
        if entries:
            kv.set_many(entries, timeout=max(scaled(fresh), 0.05))
    return statuses


def instance_status_read(*, provider: str, region: str, instance_id: str, operation: str = "") -> InstanceInfo:
    """The instance's current status, from a fresh batch when one has it; raises ``InstanceNotFound``."""
    cloud = get_cloud(provider)
    if operation or not cloud.describes_in_batches:
        return cloud.get_instance_status(instance_id, region, operation=operation)
    cached = caches["routing"].get(_key(provider, region, instance_id))
    if cached is not None:
        return cached
    # Not the others starting: reading them all with each run's check costs O(runs) per run; the
    # sweep reads them together.
    statuses = instance_statuses_read(provider=provider, region=region, instance_ids=[instance_id])
    if instance_id not in statuses:
        raise InstanceNotFound(f"{provider} has no instance {instance_id} in {region}", provider=provider)
    return statuses[instance_id]
