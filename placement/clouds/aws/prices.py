"""AWS spot prices for the catalog refresh: EC2 ``DescribeSpotPriceHistory``, per availability zone.

Asked with ``StartTime`` = now, the API answers the price in effect in each zone for
each instance type (Linux/UNIX), paginated with ``NextToken``. On-demand prices are not
in this API, so a refresh leaves them as the catalog has them.
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
from placement.clouds.base import CloudError, ObservedPrice, PermanentCloudError, PriceSource, TransientCloudError


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
