"""AWS spot prices for the catalog refresh: EC2 ``DescribeSpotPriceHistory``, per availability zone.

Asked with ``StartTime`` = now, the API answers the price in effect in each zone for
each instance type (Linux/UNIX), paginated with ``NextToken``. On-demand prices are not
in this API, so a refresh leaves them as the catalog has them.

Spot placement scores (``GetSpotPlacementScores``, 1-10: how likely a request for one
instance is to succeed in a zone) are asked one instance type at a time, for the regions
refreshed, with ``SingleAvailabilityZone``; the answer names zones by id (``use1-az1``), which
``DescribeAvailabilityZones`` of each region maps to the names the catalog uses.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.utils import timezone

from placement.clouds.aws.errors import PROVIDER, normalise_error
from placement.clouds.base import (
    CloudError,
    ObservedPlacementScore,
    ObservedPrice,
    PermanentCloudError,
    PriceSource,
    TransientCloudError,
)


class AwsPriceSource(PriceSource):
    provider = PROVIDER

    def __init__(self, *, timeout: float | None = None) -> None:
        timeout = timeout or settings.PRICE_REFRESH_TIMEOUT_SECONDS
        # No client-side retries: a failed refresh keeps the last good prices and beat tries again.
        self.config = Config(connect_timeout=timeout, read_timeout=timeout, retries={"total_max_attempts": 1})

    def fetch_spot_prices(self, *, regions: list[str]) -> list[ObservedPrice]:
        instance_types = self._instance_types()
        if not instance_types:
            return []  # asked with no type, the API would answer every type there is
        observed_at = timezone.now()
        prices: list[ObservedPrice] = []
        for region in regions:
            try:
                prices.extend(self._region_prices(region, instance_types, observed_at))
            except ClientError as exc:
                raise self._client_error(exc, region) from None
            except BotoCoreError as exc:
                raise normalise_error(exc, context=region) from None
        return prices

    def fetch_placement_scores(self, *, regions: list[str], instance_types: list[str]) -> list[ObservedPlacementScore]:
        if not regions or not instance_types:
            return []
        observed_at = timezone.now()
        try:
            zone_names = {
                zone_id: (region, name) for region in regions for zone_id, name in self._zones(region).items()
            }
            client = boto3.client("ec2", region_name=regions[0], config=self.config)
            scores = []
            for instance_type in instance_types:
                for item in self._scores(client, instance_type, regions):
                    region, zone = zone_names.get(item.get("AvailabilityZoneId", ""), (item.get("Region", ""), ""))
                    if not zone or not 1 <= int(item["Score"]) <= 10:
                        continue  # a zone of a region not asked about, or a score outside the documented scale
                    scores.append(
                        ObservedPlacementScore(
                            provider=self.provider,
                            region=region,
                            availability_zone=zone,
                            instance_type=instance_type,
                            score=int(item["Score"]),
                            observed_at=observed_at,
                        )
                    )
            return scores
        except ClientError as exc:
            raise self._client_error(exc, ",".join(regions)) from None
        except BotoCoreError as exc:
            raise normalise_error(exc, context=",".join(regions)) from None
        except (KeyError, ValueError) as exc:
            raise PermanentCloudError(f"unexpected placement score answer ({exc})", provider=self.provider) from None

    def _zones(self, region: str) -> dict[str, str]:
        client = boto3.client("ec2", region_name=region, config=self.config)
        zones = client.describe_availability_zones(Filters=[{"Name": "region-name", "Values": [region]}])
        return {zone["ZoneId"]: zone["ZoneName"] for zone in zones["AvailabilityZones"] if "ZoneId" in zone}

    @staticmethod
    def _scores(client, instance_type: str, regions: list[str]) -> list[dict]:
        items, token = [], None
        while True:
            params = {
                "InstanceTypes": [instance_type],
                "TargetCapacity": 1,
                "TargetCapacityUnitType": "units",
                "SingleAvailabilityZone": True,
                "RegionNames": regions,
                "MaxResults": 1000,
            }
            if token:
                params["NextToken"] = token
            page = client.get_spot_placement_scores(**params)
            items.extend(page.get("SpotPlacementScores", []))
            token = page.get("NextToken")
            if not token:
                return items

    @staticmethod
    def _instance_types() -> list[str]:
        from placement.models import InstanceType

        return list(InstanceType.objects.filter(provider="aws").order_by("name").values_list("name", flat=True))

    def _region_prices(self, region: str, instance_types: list[str], observed_at: datetime) -> list[ObservedPrice]:
        client = boto3.client("ec2", region_name=region, config=self.config)
        pages = client.get_paginator("describe_spot_price_history").paginate(
            InstanceTypes=instance_types, ProductDescriptions=["Linux/UNIX"], StartTime=observed_at
        )
        newest: dict[tuple[str, str], dict] = {}
        for page in pages:
            for item in page["SpotPriceHistory"]:
                key = (item["AvailabilityZone"], item["InstanceType"])
                if key not in newest or item["Timestamp"] > newest[key]["Timestamp"]:
                    newest[key] = item
        try:
            return [
                ObservedPrice(
                    provider=self.provider,
                    region=region,
                    availability_zone=zone,
                    instance_type=instance_type,
                    spot_price=Decimal(item["SpotPrice"]),
                    observed_at=observed_at,
                )
                for (zone, instance_type), item in sorted(newest.items())
            ]
        except (KeyError, InvalidOperation) as exc:
            raise PermanentCloudError(
                f"{region}: unexpected spot price answer ({exc})", provider=self.provider
            ) from None

    def _client_error(self, exc: ClientError, region: str) -> CloudError:
        """Throttling and 5xx are transient, anything else permanent, as for the adapter."""
        code = exc.response.get("Error", {}).get("Code", "")
        message = f"{region}: {code}: {exc.response.get('Error', {}).get('Message', '')}"
        error = TransientCloudError if isinstance(normalise_error(exc), TransientCloudError) else PermanentCloudError
        return error(message, provider=self.provider, code=code)
