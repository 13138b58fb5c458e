from django.core.management.base import BaseCommand, CommandParser

from fleet.reconciliation import cloud_reconcile


class Command(BaseCommand):
    help = (
        "Compare every configured cloud's managed instances with the database: terminate leaked instances "
        "past the grace period, hand RUNNING workloads whose instance is gone to the interruption handling."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="print what would be done; change nothing")

    def handle(self, *args, dry_run: bool, **options) -> None:
        report = cloud_reconcile(dry_run=dry_run)
        would = "would " if dry_run else ""
        self.stdout.write(f"checked {len(report.regions_checked)} region(s): {', '.join(report.regions_checked)}")
        for action in report.actions:
            self.stdout.write(f"  {would}{action.describe()}")
        counts = {action: report.count(action) for action in ("terminate", "wait", "interrupt", "error")}
        if dry_run:
            summary = (
                "dry run, nothing changed: would terminate {terminate} leaked instance(s), leave {wait} inside "
                "the grace period, hand {interrupt} workload(s) to interruption handling; {error} error(s)"
            )
        else:
            summary = (
                "terminated {terminate} leaked instance(s), left {wait} inside the grace period, "
                "handed {interrupt} workload(s) to interruption handling; {error} error(s)"
            )
        self.stdout.write(summary.format(**counts))
