import uuid

from django.core.management.base import BaseCommand, CommandError, CommandParser

from arbitrage.errors import DomainError
from workloads import recovery
from workloads.models import Workload


class Command(BaseCommand):
    help = "Simulate a spot interruption of a workload's local-cloud instance: the notice, then the reclaim."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("workload_id")
        parser.add_argument("--grace", type=float, default=30.0, help="seconds between notice and reclaim")

    def handle(self, *args, workload_id: str, grace: float, **options) -> None:
        if not 0 <= grace <= 3600:
            raise CommandError("--grace: must be between 0 and 3600 seconds")
        try:
            uuid.UUID(workload_id)
        except ValueError:
            raise CommandError(f"no workload with id {workload_id!r}") from None
        if not Workload.objects.filter(id=workload_id).exists():
            raise CommandError(f"no workload with id {workload_id!r}")
        try:
            reclaim_at = recovery.workload_simulate_interruption(workload_id=workload_id, grace_seconds=grace)
        except DomainError as error:
            raise CommandError(error.message) from None
        self.stdout.write(f"interruption notice given; the instance is reclaimed at {reclaim_at.isoformat()}")
