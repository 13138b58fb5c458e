"""Instance segments for billing tests: known prices and times, billed like the workflows bill them."""

from datetime import datetime
from decimal import Decimal

import factory

from billing.services import usage_record_create
from tests.factories import WorkloadFactory
from workloads.models import InstanceStatus, WorkloadInstance


class WorkloadInstanceFactory(factory.django.DjangoModelFactory):
    """``WorkloadInstanceFactory(started_at=..., terminated_at=...)``.

    ``started_at`` sets ``created_at`` (which Django otherwise stamps with the
    current time). A segment with ``terminated_at`` gets its usage record from
    ``billing.services.usage_record_create`` unless ``billed=False``.
    """

    class Meta:
        model = WorkloadInstance

    workload = factory.SubFactory(WorkloadFactory)
    provider = "aws"
    region = "us-east-1"
    instance_type = "m7i.large"
    instance_id = factory.Sequence(lambda n: f"i-{n:08x}")
    spot_price = Decimal("0.100000")
    on_demand_price = Decimal("0.400000")
    terminated_at = None
    status = factory.LazyAttribute(
        lambda o: InstanceStatus.RUNNING if o.terminated_at is None else InstanceStatus.TERMINATED
    )

    @classmethod
    def _create(cls, model_class, *args, started_at: datetime | None = None, billed: bool = True, **kwargs):
        instance = super()._create(model_class, *args, **kwargs)
        if started_at is not None:
            model_class.objects.filter(pk=instance.pk).update(created_at=started_at)
        instance.refresh_from_db()
        if instance.terminated_at is not None and billed:
            usage_record_create(instance=instance)
        return instance
