from django.core.management.base import BaseCommand

from placement import services


class Command(BaseCommand):
    help = "Load the bundled spot price catalog (placement/data/catalog.json); loading it again changes nothing."

    def handle(self, *args, **options) -> None:
        counts = services.catalog_load_snapshot()
        self.stdout.write(
            f"catalog: {counts['instance_types']} instance types ({counts['types_created']} new), "
            f"{counts['offers']} offers: {counts['created']} new, {counts['updated']} updated, "
            f"{counts['unchanged']} unchanged; {counts['rescored']} re-scored"
        )
