"""Print where a workload would run now, as a table: ``manage.py placement_quote --vcpu 4 --memory-gb 16``."""

import argparse
import math

from django.core.management.base import BaseCommand, CommandError, CommandParser

from placement.api.serializers import MAX_QUOTE_LIMIT
from placement.errors import NoPlacement
from placement.requirements import RequirementsSerializer
from placement.selectors import placement_candidates

OPTIONS = {  # requirement field -> its option
    "vcpu": "--vcpu",
    "memory_gb": "--memory-gb",
    "gpu_count": "--gpu-count",
    "gpu_type": "--gpu-type",
    "architecture": "--architecture",
    "providers": "--providers",
    "regions": "--regions",
    "zones": "--zones",
    "max_price_per_hour": "--max-price",
}
COLUMNS = ("#", "provider", "region", "zone", "instance type", "vCPU", "GiB", "GPUs", "spot/h", "on-demand/h",
           "saving", "interrupts", "expected/h")  # fmt: skip


def finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def csv_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


class Command(BaseCommand):
    help = "Rank the offers a workload with these requirements would run on now, best first."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--vcpu", type=int, required=True)
        parser.add_argument("--memory-gb", type=finite_float, required=True)
        parser.add_argument("--gpu-count", type=int)
        parser.add_argument("--gpu-type", help="T4, L4, A10G, A100 or H100")
        parser.add_argument("--architecture", help="x86_64 or arm64")
        parser.add_argument("--providers", type=csv_list, help="comma-separated: aws,gcp,azure")
        parser.add_argument("--regions", type=csv_list, help="comma-separated")
        parser.add_argument("--zones", type=csv_list, help="comma-separated")
        parser.add_argument("--max-price", help="per hour, e.g. 0.50")
        parser.add_argument("--limit", type=int, default=10, help=f"1 to {MAX_QUOTE_LIMIT}")

    def handle(self, *args, limit: int, **options) -> None:
        if not 1 <= limit <= MAX_QUOTE_LIMIT:
            raise CommandError(f"--limit: must be between 1 and {MAX_QUOTE_LIMIT}")
        given = {"max_price_per_hour": options.pop("max_price"), **options}
        data = {field: given[field] for field in OPTIONS if given.get(field) is not None}
        requirements = RequirementsSerializer(data=data)
        if not requirements.is_valid():
            raise CommandError(self._problems(requirements.errors))
        try:
            candidates = placement_candidates(
                requirements=RequirementsSerializer().to_representation(requirements.validated_data), limit=limit
            )
        except NoPlacement as refusal:
            raise CommandError(refusal.message) from None
        rows = [
            (
                str(rank),
                c.provider,
                c.region,
                c.availability_zone,
                c.instance_type,
                str(c.vcpu),
                f"{c.memory_gb:g}",
                f"{c.gpu_count} x {c.gpu_type}" if c.gpu_count else "-",
                str(c.spot_price),
                str(c.on_demand_price),
                f"{c.saving_pct}%",
                c.score_parts["interruption_frequency"],
                str(c.expected_cost_per_hour),
            )
            for rank, c in enumerate(candidates, start=1)
        ]
        widths = [max(len(row[i]) for row in [COLUMNS, *rows]) for i in range(len(COLUMNS))]
        for row in [COLUMNS, *rows]:
            self.stdout.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())

    @staticmethod
    def _problems(errors: dict) -> str:
        problems = []
        for field, messages in errors.items():
            if isinstance(messages, dict):  # a list field: {index: [messages]}
                messages = [m for item in messages.values() for m in item]
            problems.append(f"{OPTIONS.get(field, field)}: {' '.join(str(m) for m in messages)}")
        return "; ".join(problems)
