"""What the demo prints: tables, the live state table and the cost summary. Pure functions of API answers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, TextIO

# ANSI: cursor up n lines; erase the line.
_UP = "\x1b[{}A"
_ERASE = "\x1b[2K"


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    widths: Sequence[int] = (),
    indent: str = "  ",
) -> list[str]:
    """Left-aligned columns, two spaces apart, at least ``widths`` wide; a header line then one line per row."""
    cells = [[str(h) for h in headers], *[[_text(c) for c in row] for row in rows]]
    least = [*widths, *[0] * len(headers)]
    sizes = [max(least[i], *(len(row[i]) for row in cells)) for i in range(len(headers))]
    return [
        indent + "  ".join(cell.ljust(size) for cell, size in zip(row, sizes, strict=True)).rstrip() for row in cells
    ]


def _text(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def decimal(value: object) -> Decimal:
    """A decimal string of the API (or a number) as a ``Decimal``; 0 for anything else."""
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return Decimal(0)


def money(value: object, places: int = 6) -> str:
    """``$0.000162``: demo segments last seconds, so cents would all read $0.00."""
    return f"${decimal(value):.{places}f}"


def per_hour(value: object) -> str:
    return f"{money(value, 4)}/h"


def percent(part: object, whole: object) -> str:
    whole = decimal(whole)
    return f"{decimal(part) / whole * 100:.0f}%" if whole else "-"


def duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {seconds % 60:04.1f} s"


def offers_table(candidates: Sequence[dict[str, Any]], *, limit: int = 5) -> list[str]:
    """The top of a placement quote, briefly."""
    rows = [
        (
            c.get("rank"),
            c.get("provider"),
            c.get("region"),
            c.get("availability_zone"),
            c.get("instance_type"),
            _shape(c),
            per_hour(c.get("spot_price")),
            per_hour(c.get("on_demand_price")),
            f"{c.get('saving_pct')}%",
        )
        for c in candidates[:limit]
    ]
    headers = ("#", "provider", "region", "zone", "type", "shape", "spot", "on-demand", "saving")
    return table(headers, rows)


def _shape(offer: dict[str, Any]) -> str:
    shape = f"{offer.get('vcpu')} vCPU {offer.get('memory_gb'):g} GiB"
    if offer.get("gpu_count"):
        shape += f" {offer['gpu_count']}x{offer.get('gpu_type') or 'GPU'}"
    return shape


def current_instance(detail: dict[str, Any]) -> dict[str, Any] | None:
    """The instance the workload runs on now (or ran on last)."""
    instances = sorted(detail.get("instances") or [], key=lambda i: i.get("created_at") or "")
    live = [i for i in instances if not i.get("terminated_at")]
    return (live or instances or [None])[-1]


STATE_HEADERS = ("workload", "state", "provider", "region", "instance type", "spot price")
# Wide enough for every state and the catalog's names, so printed rows line up as states change.
STATE_WIDTHS = (13, 12, 8, 12, 20, 10)


def state_row(name: str, detail: dict[str, Any]) -> tuple[object, ...]:
    """One line of the live table: the workload's state and where it is placed."""
    instance = current_instance(detail) or {}
    price = instance.get("spot_price")
    return (
        name,
        detail.get("status"),
        instance.get("provider"),
        instance.get("region"),
        instance.get("instance_type"),
        per_hour(price) if price is not None else None,
    )


class LiveTable:
    """A table redrawn in place on a terminal; elsewhere (a log, CI) only the rows that changed are printed."""

    def __init__(self, stream: TextIO, headers: Sequence[str], *, tty: bool, widths: Sequence[int] = ()) -> None:
        self.stream = stream
        self.headers = tuple(headers)
        self.widths = tuple(widths)
        self.tty = tty
        self.drawn = 0  # lines drawn last time (terminal)
        self.last: dict[str, tuple[str, ...]] = {}  # the row printed last per key (elsewhere)
        self.header_printed = False

    def update(self, rows: Sequence[Sequence[object]]) -> None:
        """Show ``rows`` (the first cell is the row's key)."""
        lines = table(self.headers, rows, widths=self.widths)
        if self.tty:
            out = [_UP.format(self.drawn)] if self.drawn else []
            out += [f"\r{_ERASE}{line}\n" for line in lines]
            self.stream.write("".join(out))
            self.drawn = len(lines)
        else:
            changed = [
                line
                for row, line in zip(rows, lines[1:], strict=True)
                if self.last.get(str(row[0])) != tuple(_text(c) for c in row)
            ]
            if changed and not self.header_printed:
                self.stream.write(lines[0] + "\n")
                self.header_printed = True
            self.stream.writelines(line + "\n" for line in changed)
            self.last.update({str(row[0]): tuple(_text(c) for c in row) for row in rows})
        self.stream.flush()


@dataclass(frozen=True)
class CostTotals:
    spend: Decimal
    on_demand: Decimal

    @property
    def saving(self) -> Decimal:
        return self.on_demand - self.spend


def cost_lines(costs: Sequence[tuple[str, dict[str, Any]]]) -> tuple[list[str], CostTotals]:
    """Each workload's instance segments, its total, and the grand total with the saving versus on-demand.

    ``costs`` is ``(workload name, the detail's cost field)`` per workload:
    ``{spend, on_demand_equivalent, saving, segments: [{provider, region, instance_type,
    hours, spot_price_per_hour, cost, on_demand_cost}, ...]}``.
    """
    rows: list[tuple[object, ...]] = []
    spend = on_demand = Decimal(0)
    for name, cost in costs:
        for number, segment in enumerate(cost.get("segments") or [], start=1):
            rows.append(
                (
                    name,
                    number,
                    f"{segment.get('provider')}/{segment.get('region')}",
                    segment.get("instance_type"),
                    duration(float(decimal(segment.get("hours")) * 3600)),
                    per_hour(segment.get("spot_price_per_hour")),
                    money(segment.get("cost")),
                    money(segment.get("on_demand_cost")),
                )
            )
        spend += decimal(cost.get("spend"))
        on_demand += decimal(cost.get("on_demand_equivalent"))
    headers = ("workload", "segment", "cloud/region", "instance type", "ran", "spot price", "cost", "on-demand")
    lines = table(headers, rows)
    totals = CostTotals(spend=spend, on_demand=on_demand)
    lines += [
        "",
        f"  total spend {money(spend)}; the same seconds on-demand {money(on_demand)}; "
        f"saved {money(totals.saving)} ({percent(totals.saving, on_demand)})",
    ]
    return lines, totals


def heading(number: int, title: str) -> list[str]:
    text = f"{number}. {title}"
    return ["", text, "-" * len(text)]
