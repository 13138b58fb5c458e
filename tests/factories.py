from datetime import datetime
from decimal import Decimal

import factory

from accounts.models import Customer
from accounts.services import api_key_create
from billing.services import usage_record_create
from workloads.models import InstanceStatus, Workload, WorkloadInstance, WorkloadStatus


class CustomerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Customer

    name = factory.Sequence(lambda n: f"Customer {n}")
    max_concurrent_workloads = 5


class WorkloadFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Workload

    customer = factory.SubFactory(CustomerFactory)
    name = factory.Sequence(lambda n: f"workload-{n}")
    status = WorkloadStatus.PENDING
    requirements = factory.LazyFunction(lambda: {"vcpu": 2, "memory_gb": 4.0})
    config = factory.LazyFunction(lambda: {"health_check_port": 8080})


def customer_with_key(**kwargs) -> tuple[Customer, str]:
    customer = CustomerFactory(**kwargs)
    _, raw_key = api_key_create(customer=customer)
    return customer, raw_key


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
