from django.core.management.base import BaseCommand, CommandError

from arbitrage.env import ConfigError
from arbitrage.preflight import check_services


class Command(BaseCommand):
    help = "Check that the database, the Celery broker and the routing KV answer."

    def handle(self, *args, **options) -> None:
        try:
            check_services()
        except ConfigError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write("database, broker and routing KV answer")
