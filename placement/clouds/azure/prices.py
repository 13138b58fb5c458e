"""Azure spot prices for the catalog refresh, from the public Retail Prices API (no credentials needed).

``GET https://prices.azure.com/api/retail/prices?$filter=serviceName eq 'Virtual Machines'
and priceType eq 'Consumption' and armRegionName eq '<region>'`` answers pages of
``{"Items": [...], "NextPageLink": "...&$skip=100", "Count": 100}``. Each VM size has
a pay-as-you-go meter (``skuName`` "D4s v5") and a Spot meter ("D4s v5 Spot"), for
Linux and (``productName`` "... Windows") Windows; ``armSkuName`` is the size.

Azure prices spot per region, so each price comes back for every zone of the region
(``availability_zone`` ""); the catalog applies it to each zone it holds there.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.utils import timezone

from placement.clouds.base import ObservedPrice, PermanentCloudError, PriceSource
from placement.clouds.http import get_json

MAX_PAGES_PER_REGION = 500


class AzurePriceSource(PriceSource):
    provider = "azure"

    def __init__(self, *, base_url: str | None = None, timeout: float | None = None) -> None:
        self.base_url = base_url or settings.AZURE_RETAIL_PRICES_URL
        self.timeout = timeout or settings.PRICE_REFRESH_TIMEOUT_SECONDS

    def fetch_spot_prices(self, *, regions: list[str]) -> list[ObservedPrice]:
        observed_at = timezone.now()
        prices: list[ObservedPrice] = []
        for region in regions:
            spot, on_demand = self._region_meters(region)
            prices.extend(
                ObservedPrice(
                    provider=self.provider,
                    region=region,
                    availability_zone="",
                    instance_type=size,
                    spot_price=price,
                    on_demand_price=on_demand.get(size),
                    observed_at=observed_at,
                )
                for size, price in sorted(spot.items())
            )
        return prices

    def _region_meters(self, region: str) -> tuple[dict[str, Decimal], dict[str, Decimal]]:
        """Linux per-hour prices of every VM size in ``region``: (spot, pay-as-you-go)."""
        query = f"serviceName eq 'Virtual Machines' and priceType eq 'Consumption' and armRegionName eq '{region}'"
        url: str | None = f"{self.base_url}?{urlencode({'$filter': query})}"
        spot: dict[str, Decimal] = {}
        on_demand: dict[str, Decimal] = {}
        for _page in range(MAX_PAGES_PER_REGION):
            if not url:
                return spot, on_demand
            document = get_json(url, provider=self.provider, timeout=self.timeout)
            try:
                items = document["Items"]
                for item in items:
                    self._collect(item, region, spot, on_demand)
            except (KeyError, TypeError, InvalidOperation) as exc:
                raise PermanentCloudError(
                    f"unexpected Retail Prices answer for {region}: {type(exc).__name__} {exc}", provider=self.provider
                ) from None
            url = document.get("NextPageLink") or None
        raise PermanentCloudError(
            f"more than {MAX_PAGES_PER_REGION} pages of prices for {region}", provider=self.provider
        )

    @staticmethod
    def _collect(item: dict[str, Any], region: str, spot: dict[str, Decimal], on_demand: dict[str, Decimal]) -> None:
        if item.get("armRegionName") != region or item.get("unitOfMeasure") != "1 Hour":
            return
        if "Windows" in item.get("productName", "") or "Low Priority" in item.get("skuName", ""):
            return
        size = item["armSkuName"]
        price = Decimal(str(item["retailPrice"]))
        if price <= 0:
            return
        target = spot if item["skuName"].endswith(" Spot") else on_demand
        # Several meters can price one size (older and newer meters): keep the lowest.
        target[size] = min(price, target.get(size, price))
