"""Catalog rows for placement tests; offers get their expected cost and their type's bounds."""

from datetime import datetime
from decimal import Decimal

import factory
from django.utils import timezone

from placement.clouds.base import ObservedPrice
from placement.models import InstanceType, Offer
from placement.risk import RiskModel
from placement.services import instance_types_refresh_bounds, prices_apply


class InstanceTypeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = InstanceType
        django_get_or_create = ("provider", "name")

    provider = "aws"
    name = factory.Sequence(lambda n: f"m{n}.xlarge")
    category = "general"
    vcpu = 4
    memory_gb = 16.0
    gpu_count = 0
    gpu_type = None
    architecture = "x86_64"


class OfferFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Offer
        skip_postgeneration_save = True

    instance_type = factory.SubFactory(InstanceTypeFactory)
    region = "us-east-1"
    availability_zone = factory.LazyAttribute(lambda offer: f"{offer.region}a")
    spot_price = Decimal("0.100000")
    on_demand_price = Decimal("0.300000")
    risk_bucket = 0
    expected_cost = factory.LazyAttribute(
        lambda offer: RiskModel.from_settings().expected_cost(
            spot_price=Decimal(offer.spot_price), risk_bucket=offer.risk_bucket
        )
    )
    observed_at = factory.LazyFunction(timezone.now)
    source = "test"

    @factory.post_generation
    def bounds(offer, create, extracted, **kwargs):
        if create:
            instance_types_refresh_bounds(type_ids=[offer.instance_type_id])


def offer(
    name: str,
    *,
    provider: str = "aws",
    vcpu: int = 4,
    memory_gb: float = 16.0,
    gpu_count: int = 0,
    gpu_type: str | None = None,
    architecture: str = "x86_64",
    **fields,
) -> Offer:
    """An offer of instance type ``name`` (made with this shape if it is new)."""
    instance_type = InstanceTypeFactory(
        provider=provider,
        name=name,
        vcpu=vcpu,
        memory_gb=memory_gb,
        gpu_count=gpu_count,
        gpu_type=gpu_type,
        architecture=architecture,
        category="gpu" if gpu_count else "general",
    )
    if "spot_price" in fields:
        fields["spot_price"] = Decimal(str(fields["spot_price"]))
    return OfferFactory(instance_type=instance_type, **fields)


def aws_price_refreshed(
    *,
    instance_type: str,
    spot_price: str,
    observed_at: datetime | None = None,
    region: str = "us-east-1",
    availability_zone: str = "us-east-1a",
) -> dict[str, int]:
    """One AWS spot price applied to the catalog as a refresh from the AWS API would (source ``aws-api``)."""
    price = ObservedPrice(
        provider="aws",
        region=region,
        availability_zone=availability_zone,
        instance_type=instance_type,
        spot_price=Decimal(spot_price),
        observed_at=observed_at or timezone.now(),
    )
    return prices_apply(provider="aws", source="aws-api", prices=[price])
