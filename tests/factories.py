import factory

from workloads.models import Customer, Workload, WorkloadStatus
from workloads.services import api_key_create


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
