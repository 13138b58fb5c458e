from django.core.management.base import BaseCommand, CommandError, CommandParser

from placement import services
from placement.clouds.base import CloudNotConfigured
from placement.models import PriceRefresh
from placement.requirements import PROVIDERS


class Command(BaseCommand):
    help = (
        "Read one provider's current spot prices from its public price API into the catalog. "
        "A refresh that fails keeps the last good prices and exits non-zero."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("provider", choices=PROVIDERS)
        parser.add_argument(
            "--regions", default="", help="comma-separated regions (default: every region the catalog holds)"
        )

    def handle(self, *args, provider: str, regions: str, **options) -> None:
        chosen = [region.strip() for region in regions.split(",") if region.strip()]
        try:
            refresh = services.catalog_refresh(provider=provider, regions=chosen or None)
        except CloudNotConfigured:
            raise CommandError(
                f"no price source is configured for {provider}: add it to PRICE_SOURCES (e.g. PRICE_SOURCES={provider})"
            ) from None
        if refresh.status == PriceRefresh.Status.FAILED:
            raise CommandError(f"{provider} refresh failed: {refresh.error}")
        self.stdout.write(
            f"{provider} ({', '.join(refresh.regions)}): {refresh.prices_seen} prices read, "
            f"{refresh.offers_updated} offers updated, {refresh.prices_changed} prices changed, "
            f"{refresh.unknown_pools} for pools not in the catalog"
        )
