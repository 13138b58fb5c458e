from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from accounts import services


class Command(BaseCommand):
    help = "Create a customer and print its first API key (shown once, never stored)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="The customer's name.")
        parser.add_argument("--max-concurrent-workloads", type=int, default=None)
        parser.add_argument("--webhook-url", default="", help="Where notifications are POSTed.")
        parser.add_argument("--webhook-secret", default="", help="HMAC key for webhook signatures (made if omitted).")

    def handle(self, *args, name: str, max_concurrent_workloads, webhook_url: str, webhook_secret: str, **options):
        if not name.strip():
            raise CommandError("name: may not be blank")
        if max_concurrent_workloads is not None and max_concurrent_workloads < 1:
            raise CommandError("--max-concurrent-workloads: must be at least 1")
        try:
            with transaction.atomic():
                customer = services.customer_create(
                    name=name.strip(),
                    max_concurrent_workloads=max_concurrent_workloads,
                    webhook_url=webhook_url,
                    webhook_secret=webhook_secret,
                )
                _, raw_key = services.api_key_create(customer=customer)
        except ValidationError as exc:
            problems = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items())
            raise CommandError(problems) from None
        self.stdout.write(f"customer: {customer.id} ({customer.name})")
        if customer.webhook_secret:
            self.stdout.write(f"webhook secret: {customer.webhook_secret}")
        self.stdout.write(f"api key: {raw_key}")
