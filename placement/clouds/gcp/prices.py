"""GCP Spot VM prices for the catalog refresh, from the Cloud Billing Catalog API.

``GET https://cloudbilling.googleapis.com/v1/services/6F81-5844-456A/skus?key=...``
(6F81-5844-456A is Compute Engine) answers pages of ``{"skus": [...], "nextPageToken": "..."}``.
Compute Engine prices a machine by its parts, not by machine type: one SKU per family
for a vCPU-hour ("N2 Instance Core running in Americas"), one for a GiB-hour of memory
("N2 Instance Ram ..."), one per GPU model ("Nvidia L4 GPU ..."), each with
``category.usageType`` "OnDemand" or "Preemptible" (Spot, described "Spot Preemptible
..."), the regions it applies to in ``serviceRegions`` and its price in
``pricingInfo[].pricingExpression.tieredRates[].unitPrice`` as ``{units, nanos}``.

A machine type's price is vCPU x core price + GiB x memory price + GPUs x GPU price,
for the machine types the catalog holds (their shapes come from the catalog). Spot
prices are per region: each comes back for every zone (``availability_zone`` "").
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.utils import timezone

from placement.clouds.base import ObservedPrice, PermanentCloudError, PriceSource
from placement.clouds.http import get_json

COMPUTE_ENGINE_SERVICE = "6F81-5844-456A"
MAX_PAGES = 200
SPOT, ON_DEMAND = "Preemptible", "OnDemand"

# "Spot Preemptible N2 Instance Core running in Americas", "Compute optimized Ram running in Iowa",
# "T2A Arm Instance Core running in Americas", "A2 Instance Ram running in Americas"
_PART = re.compile(
    r"^(?:Spot Preemptible )?(?:Preemptible )?(?P<family>Compute optimized|[A-Z][A-Z0-9]+)"
    r"(?: (?:AMD|Arm|Intel))?(?: Instance)? (?P<part>Core|Ram) running in "
)
# "Nvidia L4 GPU running in Americas", "Spot Preemptible Nvidia H100 80GB GPU running in ...",
# "Nvidia Tesla T4 GPU attached to Spot Preemptible VMs running in Americas"
_GPU = re.compile(r"^(?:Spot Preemptible )?Nvidia (?P<model>Tesla T4|L4|Tesla A100|H100 80GB) GPU ")
_GPU_TYPES = {"Tesla T4": "T4", "L4": "L4", "Tesla A100": "A100", "H100 80GB": "H100"}
_FAMILIES = {"Compute optimized": "c2"}


def unit_price(sku: dict[str, Any]) -> Decimal:
    """The SKU's current per-unit price (the last tier: the first is sometimes a free tier)."""
    rate = sku["pricingInfo"][-1]["pricingExpression"]["tieredRates"][-1]["unitPrice"]
    return Decimal(rate.get("units") or 0) + Decimal(rate.get("nanos") or 0) / Decimal(1_000_000_000)


class GcpPriceSource(PriceSource):
    provider = "gcp"

    def __init__(self, *, base_url: str | None = None, api_key: str | None = None, timeout: float | None = None):
        self.base_url = (base_url or settings.GCP_BILLING_API_URL).rstrip("/")
        self.api_key = settings.GCP_BILLING_API_KEY if api_key is None else api_key
        self.timeout = timeout or settings.PRICE_REFRESH_TIMEOUT_SECONDS

    def fetch_spot_prices(self, *, regions: list[str]) -> list[ObservedPrice]:
        observed_at = timezone.now()
        parts = self._unit_prices(set(regions))
        prices = []
        for name, vcpu, memory_gb, gpu_count, gpu_type in self._machine_types():
            family = name.split("-", 1)[0]
            for region in regions:
                spot = self._machine_price(parts, SPOT, region, family, vcpu, memory_gb, gpu_count, gpu_type)
                if spot is None:
                    continue
                prices.append(
                    ObservedPrice(
                        provider=self.provider,
                        region=region,
                        availability_zone="",
                        instance_type=name,
                        spot_price=spot,
                        on_demand_price=self._machine_price(
                            parts, ON_DEMAND, region, family, vcpu, memory_gb, gpu_count, gpu_type
                        ),
                        observed_at=observed_at,
                    )
                )
        return prices

    @staticmethod
    def _machine_types() -> list[tuple]:
        from placement.models import InstanceType

        return list(
            InstanceType.objects.filter(provider="gcp")
            .order_by("name")
            .values_list("name", "vcpu", "memory_gb", "gpu_count", "gpu_type")
        )

    @staticmethod
    def _machine_price(parts, usage, region, family, vcpu, memory_gb, gpu_count, gpu_type) -> Decimal | None:
        core = parts.get((usage, region, family, "Core"))
        ram = parts.get((usage, region, family, "Ram"))
        gpu = parts.get((usage, region, "gpu", gpu_type)) if gpu_count else Decimal(0)
        if core is None or ram is None or gpu is None:
            return None
        return (core * vcpu + ram * Decimal(str(memory_gb)) + gpu * gpu_count).quantize(Decimal("0.000001"))

    def _unit_prices(self, regions: set[str]) -> dict[tuple[str, str, str, str], Decimal]:
        """{(usage, region, family | "gpu", "Core" | "Ram" | GPU type): price per unit-hour}."""
        parts: dict[tuple[str, str, str, str], Decimal] = {}
        url = f"{self.base_url}/services/{COMPUTE_ENGINE_SERVICE}/skus"
        fields = {"currencyCode": "USD", "pageSize": "5000"}
        if self.api_key:
            fields["key"] = self.api_key
        for _page in range(MAX_PAGES):
            document = get_json(url, provider=self.provider, timeout=self.timeout, fields=fields)
            try:
                for sku in document.get("skus", []):
                    self._collect(sku, regions, parts)
            except (KeyError, IndexError, TypeError, ArithmeticError) as exc:
                raise PermanentCloudError(
                    f"unexpected Cloud Billing answer: {type(exc).__name__} {exc}", provider=self.provider
                ) from None
            token = document.get("nextPageToken")
            if not token:
                return parts
            fields = {**fields, "pageToken": token}
        raise PermanentCloudError(f"more than {MAX_PAGES} pages of Compute Engine SKUs", provider=self.provider)

    @staticmethod
    def _collect(sku: dict[str, Any], regions: set[str], parts: dict) -> None:
        category = sku["category"]
        usage = category.get("usageType")
        if category.get("resourceFamily") != "Compute" or usage not in (SPOT, ON_DEMAND):
            return
        description = sku["description"]
        # A Spot SKU says so in its description too; anything else is a SKU we do not model.
        if (usage == SPOT) != ("Preemptible" in description.split(" running in ")[0]):
            return
        if match := _GPU.match(description):
            key: tuple[str, str] = ("gpu", _GPU_TYPES[match["model"]])
        elif match := _PART.match(description):
            key = (_FAMILIES.get(match["family"], match["family"].lower()), match["part"])
        else:
            return
        price = unit_price(sku)
        for region in regions.intersection(sku.get("serviceRegions", [])):
            parts[(usage, region, *key)] = price
