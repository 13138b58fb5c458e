"""Local HTTP servers that answer like the real price APIs, for the refresh adapters to read.

* ``FakeAzureRetailPrices``: ``GET /api/retail/prices?$filter=...`` answering
  ``{"BillingCurrency", "CustomerEntityId", "CustomerEntityType", "Items", "NextPageLink", "Count"}``,
  paged with ``$skip`` like the real API (whose pages are 100 items; these are smaller).
* ``FakeCloudBilling``: ``GET /v1/services/6F81-5844-456A/skus?key=...&pageToken=...`` answering
  ``{"skus": [...], "nextPageToken": "..."}`` (an empty token on the last page), SKUs shaped as the
  Cloud Billing Catalog API returns them.

Both bind 127.0.0.1 on a free port and can be told to fail (``fail_with``) or to
answer something that is not what the adapter expects (``garbage``).
"""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qs, quote, urlsplit

from tests.placement.emulator_server import EmulatorServer


class _FakeServer(EmulatorServer):
    protocol_version = "HTTP/1.0"  # one request a connection

    def __init__(self) -> None:
        super().__init__()
        self.fail_with: int | None = None  # answer every request with this HTTP status
        self.fail_after_pages: int | None = None  # ...from this page on
        self.garbage: bytes | None = None  # answer with this body instead
        self.requests: list[str] = []
        self.start()

    def respond(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        self.requests.append(target)
        status, payload = self.answer(target)
        return status, {"Content-Type": "application/json; charset=utf-8"}, payload

    def answer(self, path: str) -> tuple[int, bytes]:
        page_number = len(self.requests)
        if self.fail_with and (self.fail_after_pages is None or page_number > self.fail_after_pages):
            return self.fail_with, b'{"error": {"code": "ServerError", "message": "try again later"}}'
        if self.garbage is not None:
            return 200, self.garbage
        return 200, json.dumps(self.page(path)).encode()

    def page(self, path: str) -> dict:
        raise NotImplementedError

    def close(self) -> None:
        self.stop()


# --- Azure Retail Prices --------------------------------------------------------------


def azure_item(size: str, region: str, price: str, *, spot: bool = False, windows: bool = False, low=False) -> dict:
    """One Retail Prices item, as the API returns a Virtual Machines consumption meter."""
    name = size.removeprefix("Standard_").replace("_", " ")
    sku_name = f"{name} Low Priority" if low else f"{name} Spot" if spot else name
    series = name.split(" ", 1)[-1]
    return {
        "currencyCode": "USD",
        "tierMinimumUnits": 0.0,
        "retailPrice": float(price),
        "unitPrice": float(price),
        "armRegionName": region,
        "location": {"eastus": "US East", "westeurope": "EU West", "westus2": "US West 2"}.get(region, region),
        "effectiveStartDate": "2025-06-01T00:00:00Z",
        "meterId": f"00000000-0000-0000-0000-{abs(hash((size, region, spot, windows, low))) % 10**12:012d}",
        "meterName": sku_name,
        "productId": "DZH318Z0BQ4L",
        "skuId": "DZH318Z0BQ4L/00TG",
        "productName": f"Virtual Machines {series} Series{' Windows' if windows else ''}",
        "skuName": sku_name,
        "serviceName": "Virtual Machines",
        "serviceId": "DZH313Z7MMC8",
        "serviceFamily": "Compute",
        "unitOfMeasure": "1 Hour",
        "type": "Consumption",
        "isPrimaryMeterRegion": True,
        "armSkuName": size,
    }


class FakeAzureRetailPrices(_FakeServer):
    PATH = "/api/retail/prices"

    def __init__(self, items: list[dict], *, page_size: int = 3) -> None:
        self.items = items
        self.page_size = page_size
        super().__init__()

    @property
    def base_url(self) -> str:
        return self.origin + self.PATH

    def page(self, path: str) -> dict:
        url = urlsplit(path)
        assert url.path == self.PATH, url.path
        query = parse_qs(url.query)
        (filter_,) = query["$filter"]
        region = re.search(r"armRegionName eq '([^']+)'", filter_)[1]
        assert "serviceName eq 'Virtual Machines'" in filter_ and "priceType eq 'Consumption'" in filter_
        matching = [item for item in self.items if item["armRegionName"] == region]
        skip = int(query.get("$skip", ["0"])[0])
        page = matching[skip : skip + self.page_size]
        more = skip + self.page_size < len(matching)
        next_link = f"{self.base_url}?$filter={quote(filter_)}&$skip={skip + self.page_size}" if more else None
        return {
            "BillingCurrency": "USD",
            "CustomerEntityId": "Default",
            "CustomerEntityType": "Retail",
            "Items": page,
            "NextPageLink": next_link,
            "Count": len(page),
        }


# --- GCP Cloud Billing Catalog --------------------------------------------------------


def gcp_sku(description: str, price: str, *, usage: str, regions: list[str], group: str, unit: str = "h") -> dict:
    """One Compute Engine SKU, as ``services/6F81-5844-456A/skus`` returns it."""
    units, _, fraction = price.partition(".")
    nanos = int((fraction + "000000000")[:9])
    sku_id = f"{abs(hash((description, usage))) % 10**12:012d}"
    return {
        "name": f"services/6F81-5844-456A/skus/{sku_id[:4]}-{sku_id[4:8]}-{sku_id[8:]}",
        "skuId": f"{sku_id[:4]}-{sku_id[4:8]}-{sku_id[8:]}",
        "description": description,
        "category": {
            "serviceDisplayName": "Compute Engine",
            "resourceFamily": "Compute",
            "resourceGroup": group,
            "usageType": usage,
        },
        "serviceRegions": regions,
        "pricingInfo": [
            {
                "summary": "",
                "pricingExpression": {
                    "usageUnit": unit,
                    "displayQuantity": 1,
                    "tieredRates": [
                        {"startUsageAmount": 0, "unitPrice": {"currencyCode": "USD", "units": units, "nanos": nanos}}
                    ],
                    "usageUnitDescription": "hour" if unit == "h" else "gibibyte hour",
                    "baseUnit": "s" if unit == "h" else "By.s",
                    "baseUnitDescription": "second" if unit == "h" else "byte second",
                    "baseUnitConversionFactor": 3600 if unit == "h" else 3865470566400,
                },
                "aggregationInfo": {
                    "aggregationLevel": "ACCOUNT",
                    "aggregationInterval": "DAILY",
                    "aggregationCount": 1,
                },
                "currencyConversionRate": 1,
                "effectiveTime": "2025-06-01T07:00:00.000Z",
            }
        ],
        "serviceProviderName": "Google",
        "geoTaxonomy": {"type": "MULTI_REGIONAL" if len(regions) > 1 else "REGIONAL", "regions": regions},
    }


class FakeCloudBilling(_FakeServer):
    PATH = "/v1/services/6F81-5844-456A/skus"

    def __init__(self, skus: list[dict], *, page_size: int = 2, api_key: str = "test-key") -> None:
        self.skus = skus
        self.page_size = page_size
        self.api_key = api_key
        super().__init__()

    @property
    def base_url(self) -> str:
        return self.origin + "/v1"

    def page(self, path: str) -> dict:
        url = urlsplit(path)
        assert url.path == self.PATH, url.path
        query = parse_qs(url.query)
        assert query["key"] == [self.api_key]
        start = int(query.get("pageToken", ["0"])[0])
        end = start + self.page_size
        return {"skus": self.skus[start:end], "nextPageToken": str(end) if end < len(self.skus) else ""}
