from django.core.management.base import BaseCommand, CommandError

from placement.clouds.base import CloudError
from placement.clouds.local import fleet_client


class Command(BaseCommand):
    help = (
        "Run the local cloud's fleet host in the foreground (LOCAL_CLOUD_HOST_MODE=fleet): one process serving "
        "every local instance. The adapter starts one in the background when none runs; Ctrl-C stops it and "
        "its instances."
    )

    def handle(self, *args, **options) -> None:
        self.stdout.write(f"fleet host: state in {fleet_client.state_dir()}")
        try:
            fleet_client.host_run_foreground()
        except CloudError as error:
            raise CommandError(error.message) from None
