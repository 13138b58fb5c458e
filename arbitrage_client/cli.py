"""``arb``: the command line over ``arbitrage_client.Client`` (docs/cli.md).

Exit status: 0 done; 1 the API refused or could not be reached, or the workload failed;
2 a usage error or a bad spec. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.table import Table

from arbitrage_client.client import DEFAULT_URL, ENDED, KEY_ENV, URL_ENV, Client
from arbitrage_client.errors import (
    ApiError,
    ArbitrageError,
    AuthenticationFailed,
    BadRequest,
    ConfigurationError,
    Conflict,
    ConnectionFailed,
    NotFound,
)
from arbitrage_client.spec import Spec, SpecError, load_spec, spec_field_name
from arbitrage_client.types import Instance, LogLine, WorkloadDetail

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
MICRO = Decimal("0.000001")
EXIT_FAILED, EXIT_USAGE = 1, 2


@dataclass
class Settings:
    url: str
    api_key: str | None
    _client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.url, self.api_key or "")
        return self._client


class Arb(click.Group):
    """Turns every client error into one line on stderr and an exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SpecError as error:
            _fail(str(error), EXIT_USAGE)
        except ConfigurationError as error:
            _fail(str(error), EXIT_USAGE)
        except ConnectionFailed as error:
            _fail(f"{error}; is the service running? (--url or {URL_ENV})", EXIT_FAILED)
        except AuthenticationFailed as error:
            _fail(f"the API refused the API key: {error.message} (--api-key or {KEY_ENV})", EXIT_FAILED)
        except ApiError as error:
            where = f"{error.method} {error.path}: " if error.method else ""
            _fail(f"{where}{error.status} {error.message}", EXIT_FAILED)
        except ArbitrageError as error:
            _fail(str(error), EXIT_FAILED)


def _fail(message: str, status: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(status)


def _console() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _json_out(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


@click.group(cls=Arb, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", envvar=URL_ENV, default=DEFAULT_URL, show_default=True, help=f"The API ({URL_ENV}).")
@click.option("--api-key", envvar=KEY_ENV, help=f"Your API key, ca_... ({KEY_ENV}).")
@click.pass_context
def main(ctx: click.Context, url: str, api_key: str | None) -> None:
    """Run workloads on the cheapest spot capacity across AWS, GCP and Azure."""
    ctx.obj = Settings(url, api_key)
    ctx.call_on_close(lambda: ctx.obj._client and ctx.obj._client.close())


# --- launch ------------------------------------------------------------------------------------------


@main.command()
@click.argument("spec_file", metavar="SPEC", type=click.Path(dir_okay=False))
@click.option("-d", "--detach", is_flag=True, help="Return once it is submitted; do not watch it.")
@click.option("--idempotency-key", help="Send again with the same key and the first launch is returned.")
@click.option("--timeout", default=900.0, show_default=True, help="Seconds to wait for it to be RUNNING.")
@json_option
@click.pass_obj
def launch(
    settings: Settings, spec_file: str, detach: bool, idempotency_key: str | None, timeout: float, as_json: bool
) -> None:
    """Submit the workload described in SPEC (YAML); watch it start, then follow its logs."""
    spec = load_spec(spec_file)
    client = settings.client
    try:
        created = client.create(spec.request, idempotency_key=idempotency_key)
    except BadRequest as error:
        _refused_spec(spec, error)
    if as_json and detach:
        _json_out(created)
        return
    console = _console()
    console.print(f"Launched [bold]{created['name']}[/]: {created['id']} ({created['status']})")
    if detach:
        console.print(f"  arb status {created['id'][:8]}    arb logs -f {created['id'][:8]}")
        return
    workload_id = created["id"]
    shown = 0  # state changes printed so far: each one, even those between two polls

    def moved(detail: WorkloadDetail) -> None:
        nonlocal shown
        changes = [e for e in detail.get("events") or [] if e.get("kind") == "transition" and e.get("to_status")]
        for event in changes[shown:]:
            line = _state_line(detail) if event["to_status"] == detail["status"] else event["to_status"]
            console.print(f"  {_clock(event.get('created_at'))}  {line}", markup=False)
        shown = max(shown, len(changes))

    try:
        with console.status(f"{created['status']} …") as spinner:
            detail = client.wait(
                workload_id,
                {"RUNNING", "STOPPING", *ENDED},
                timeout=timeout,
                on_change=lambda d: (moved(d), spinner.update(f"{d['status']} …")),
            )
        if detail["status"] == "RUNNING" and detail.get("endpoint"):
            console.print(f"  endpoint: {detail['endpoint']}", markup=False)
        console.print(f"  following its logs (Ctrl-C detaches; arb down {workload_id[:8]} stops it)")
        for line in client.follow(workload_id):
            _print_line(line, timestamps=False)
        final = client.get(workload_id)
        moved(final)
    except KeyboardInterrupt:
        click.echo(f"\ndetached: {workload_id} keeps running (arb down {workload_id[:8]} stops it)", err=True)
        sys.exit(130)
    console.print(f"{final['name']} ended {final['status']}: {_reason(final)}", markup=False)
    if final["status"] == "FAILED":
        sys.exit(EXIT_FAILED)


def _refused_spec(spec: Spec, error: ApiError) -> NoReturn:
    """The API's 400 on the spec's request: point at the spec's line, exit 2."""
    fields = error.fields or {}
    if fields:
        path, messages = next(iter(fields.items()))
        where = f"{spec.source}:{spec.line_of(path)}" if spec.line_of(path) else spec.source
        _fail(f"{where}: {spec_field_name(path)}: {' '.join(messages)} (refused by the API)", EXIT_USAGE)
    _fail(f"{spec.source}: {error.message} (refused by the API)", EXIT_USAGE)


def _state_line(detail: WorkloadDetail) -> str:
    state = detail["status"]
    instance = _current(detail)
    if instance and state in ("PROVISIONING", "RUNNING"):
        where = f"{instance['provider']} {instance['region']} {instance['instance_type']}"
        return f"{state:<13} {where} ({detail.get('market') or instance.get('market')}, ${_price(instance)}/h)"
    reason = detail.get("status_reason") or detail.get("failure_reason") or ""
    return f"{state:<13} {reason}".rstrip()


def _reason(detail: WorkloadDetail) -> str:
    return detail.get("failure_reason") or detail.get("termination_reason") or "-"


def _clock(when: str | None) -> str:
    """An API time as the local wall clock (HH:MM:SS)."""
    return _parse(when).astimezone().strftime("%H:%M:%S") if when else datetime.now().strftime("%H:%M:%S")


# --- status ------------------------------------------------------------------------------------------


@main.command()
@click.argument("refs", metavar="[ID|NAME]...", nargs=-1)
@click.option("-a", "--all", "show_all", is_flag=True, help="Also the TERMINATED ones.")
@json_option
@click.pass_obj
def status(settings: Settings, refs: tuple[str, ...], show_all: bool, as_json: bool) -> None:
    """Your workloads: state, where they run, market, price, spend so far, on track."""
    client = settings.client
    if refs:
        ids = [_resolve(client, ref) for ref in refs]
    else:
        ids = [w["id"] for w in client.list() if show_all or w["status"] != "TERMINATED"]
    rows = [_status_row(client.get(workload_id)) for workload_id in ids]
    if as_json:
        _json_out(rows)
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("ID", "NAME", "STATE", "CLOUD/REGION", "MARKET", "PRICE/H", "SPEND", "ON TRACK"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        where = f"{row['provider']}/{row['region']}" if row["provider"] else "-"
        state = row["status"] + (f" ({row['status_reason']})" if row["status_reason"] else "")
        on_track = {True: "yes", False: "NO", None: "-"}[row["on_track"]]
        price = f"${row['price_per_hour']}" if row["price_per_hour"] else "-"
        table.add_row(
            row["id"][:8], row["name"], state, where, row["market"] or "-", price, f"${row['spend']}", on_track
        )
    if not rows:
        click.echo("No workloads." + ("" if show_all else " (arb status --all shows the terminated ones)"))
        return
    _console().print(table)


def _status_row(detail: WorkloadDetail) -> dict[str, Any]:
    instance = _current(detail)
    return {
        "id": detail["id"],
        "name": detail["name"],
        "status": detail["status"],
        "status_reason": detail.get("status_reason") or "",
        "provider": instance["provider"] if instance else None,
        "region": instance["region"] if instance else None,
        "instance_type": instance["instance_type"] if instance else None,
        "instance_id": instance["instance_id"] if instance else None,
        "market": detail.get("market"),
        "price_per_hour": _price(instance) if instance else None,
        "spend": (detail.get("cost") or {}).get("spend", "0.000000"),
        "on_track": detail.get("on_track"),
        "endpoint": detail.get("endpoint"),
    }


def _current(detail: WorkloadDetail) -> Instance | None:
    """The instance it runs on now (or is starting), if any."""
    live = [i for i in detail.get("instances") or [] if not i.get("terminated_at")]
    return max(live, key=lambda i: i.get("created_at", "")) if live else None


def _price(instance: Instance) -> str:
    return instance.get("on_demand_price" if instance.get("market") == "on_demand" else "spot_price") or "?"


def _resolve(client: Client, ref: str) -> str:
    """A workload id from its id, the start of its id, or its name (the newest workload of that name)."""
    if UUID.match(ref):
        return ref
    workloads = client.list()
    by_name = [w for w in workloads if w["name"] == ref]
    if by_name:
        live = [w for w in by_name if w["status"] not in ENDED]
        return (live or by_name)[0]["id"]
    by_prefix = [w for w in workloads if w["id"].startswith(ref.lower())]
    if len(by_prefix) == 1:
        return by_prefix[0]["id"]
    if by_prefix:
        raise ArbitrageError(f"{ref!r} starts {len(by_prefix)} workload ids; give more of it")
    raise ArbitrageError(f"no workload with the name or id {ref!r}")


# --- logs --------------------------------------------------------------------------------------------


@main.command()
@click.argument("ref", metavar="ID|NAME")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the workload ends.")
@click.option("--after", default=0, type=click.IntRange(min=0), help="Only lines after this position.")
@click.option("-t", "--timestamps", is_flag=True, help="Prefix each line with its time and cloud.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (JSON Lines).")
@click.pass_obj
def logs(settings: Settings, ref: str, follow: bool, after: int, timestamps: bool, as_json: bool) -> None:
    """A workload's output, one stream across every instance it ran on."""
    client = settings.client
    workload_id = _resolve(client, ref)
    lines = client.follow(workload_id, after=after) if follow else client.log_lines(workload_id, after=after)
    try:
        for line in lines:
            if as_json:
                click.echo(json.dumps(line))
            else:
                _print_line(line, timestamps=timestamps)
    except KeyboardInterrupt:
        sys.exit(130)


def _print_line(line: LogLine, *, timestamps: bool) -> None:
    text = line.get("text", "")
    if line.get("stream") == "marker":
        text = f"── {text} ──"
    if timestamps:
        text = f"{line.get('time', '')} {line.get('provider', '')} {text}"
    click.echo(text)


# --- cost --------------------------------------------------------------------------------------------


@main.command()
@click.option("--month", help="YYYY-MM (UTC); default: this month.")
@json_option
@click.pass_obj
def cost(settings: Settings, month: str | None, as_json: bool) -> None:
    """What you spent in a month, the saving versus on demand, by workload and by cloud."""
    if month is not None and not re.fullmatch(r"\d{4}-\d{2}", month):
        raise click.BadParameter("give the month as YYYY-MM", param_hint="--month")
    client = settings.client
    summary = client.usage(month)
    start, end = _month_range(summary["month"])
    workloads = []
    for workload in client.list():
        if _parse(workload["created_at"]) >= end:
            continue
        if workload.get("terminated_at") and _parse(workload["terminated_at"]) < start:
            continue
        spend, on_demand = _month_cost(client.get(workload["id"]), start, end)
        if spend or on_demand:
            workloads.append(
                {
                    "id": workload["id"],
                    "name": workload["name"],
                    "status": workload["status"],
                    "spend": str(spend),
                    "on_demand_equivalent": str(on_demand),
                    "saving": str(on_demand - spend),
                }
            )
    report = {**summary, "workloads": workloads}
    if as_json:
        _json_out(report)
        return
    console = _console()
    saving = f" ({summary['saving_percent']} %)" if summary.get("saving_percent") is not None else ""
    console.print(
        f"[bold]{summary['month']}[/]: spent ${summary['spend']} for {summary['instance_hours']} instance-hours; "
        f"on demand it would have been ${summary['on_demand_equivalent']}: saved ${summary['saving']}{saving}"
    )
    if summary.get("budget") is not None:
        console.print(f"budget ${summary['budget']}, ${summary['budget_remaining']} left")
    by_workload = Table(title="by workload", box=None, header_style="bold", title_justify="left")
    for column in ("ID", "NAME", "STATE", "SPEND", "ON DEMAND", "SAVING"):
        by_workload.add_column(
            column, no_wrap=True, justify="right" if column in ("SPEND", "ON DEMAND", "SAVING") else "left"
        )
    for row in workloads:
        by_workload.add_row(
            row["id"][:8], row["name"], row["status"], f"${row['spend']}", f"${row['on_demand_equivalent']}",
            f"${row['saving']}",
        )  # fmt: skip
    by_cloud = Table(title="by cloud", box=None, header_style="bold", title_justify="left")
    for column in ("CLOUD", "HOURS", "SPEND", "ON DEMAND", "SAVING"):
        by_cloud.add_column(column, no_wrap=True, justify="left" if column == "CLOUD" else "right")
    for row in summary.get("providers") or []:
        by_cloud.add_row(
            row["provider"], row["instance_hours"], f"${row['spend']}", f"${row['on_demand_equivalent']}",
            f"${row['saving']}",
        )  # fmt: skip
    console.print()
    console.print(by_workload if workloads else "No workload ran this month.")
    console.print()
    console.print(by_cloud)


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _month_range(label: str) -> tuple[datetime, datetime]:
    year, month = (int(part) for part in label.split("-"))
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def _month_cost(detail: WorkloadDetail, start: datetime, end: datetime) -> tuple[Decimal, Decimal]:
    """The part of the workload's cost that fell in [start, end): each segment prorated by its time in it."""
    spend = on_demand = Decimal(0)
    now = datetime.now(UTC)
    for segment in (detail.get("cost") or {}).get("segments") or []:
        began = _parse(segment["started_at"])
        ended = _parse(segment["ended_at"]) if segment.get("ended_at") else now
        total = (ended - began).total_seconds()
        inside = (min(ended, end) - max(began, start)).total_seconds()
        if inside <= 0:
            continue
        share = Decimal(1) if total <= 0 or inside >= total else Decimal(inside) / Decimal(total)
        spend += Decimal(segment["cost"]) * share
        on_demand += Decimal(segment["on_demand_cost"]) * share
    return spend.quantize(MICRO), on_demand.quantize(MICRO)


# --- down --------------------------------------------------------------------------------------------


@main.command()
@click.argument("refs", metavar="ID|NAME...", nargs=-1, required=True)
@click.option("--wait", "wait_for", is_flag=True, help="Return once each is TERMINATED.")
@click.pass_obj
def down(settings: Settings, refs: tuple[str, ...], wait_for: bool) -> None:
    """Terminate workloads (cancel those not yet running)."""
    client = settings.client
    failed = False
    stopping = []
    for ref in refs:
        workload_id = ref
        try:
            workload_id = _resolve(client, ref)
            answer = client.terminate(workload_id)
            click.echo(f"{workload_id} {answer['name']}: {answer['status']}")
            stopping.append(workload_id)
        except Conflict as error:
            state = error.extra.get("current_state")
            if state in ("STOPPING", "TERMINATED"):
                click.echo(f"{workload_id}: already {state}")
                stopping.append(workload_id)
            else:
                click.echo(f"error: {ref}: {error.message}", err=True)
                failed = True
        except (NotFound, ArbitrageError) as error:
            if isinstance(error, ConnectionFailed | AuthenticationFailed):
                raise
            click.echo(f"error: {ref}: {getattr(error, 'message', error)}", err=True)
            failed = True
    if wait_for:
        for workload_id in stopping:
            client.wait(workload_id, {"TERMINATED"}, timeout=600)
            click.echo(f"{workload_id}: TERMINATED")
    if failed:
        sys.exit(EXIT_FAILED)


# --- quote -------------------------------------------------------------------------------------------


@main.command()
@click.argument("spec_file", metavar="SPEC", type=click.Path(dir_okay=False))
@click.option("--limit", default=5, show_default=True, type=click.IntRange(1, 50), help="How many offers.")
@json_option
@click.pass_obj
def quote(settings: Settings, spec_file: str, limit: int, as_json: bool) -> None:
    """The best offers for SPEC's requirements, ranked by expected cost."""
    spec = load_spec(spec_file)
    try:
        answer = settings.client.quote(spec.request["requirements"], limit=limit)
    except BadRequest as error:
        if error.status == 422:
            raise
        _refused_spec(spec, error)
    if as_json:
        _json_out(answer)
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    columns = ("#", "CLOUD", "REGION", "ZONE", "TYPE", "VCPU", "MEM GB", "GPU", "SPOT/H", "ON DEMAND/H", "SAVING",
               "EXPECTED/H")  # fmt: skip
    for column in columns:
        table.add_column(column, no_wrap=True)
    for offer in answer.get("candidates") or []:
        gpu = f"{offer['gpu_count']} {offer.get('gpu_type') or ''}".strip() if offer.get("gpu_count") else "-"
        table.add_row(
            str(offer["rank"]), offer["provider"], offer["region"], offer["availability_zone"], offer["instance_type"],
            str(offer["vcpu"]), f"{offer['memory_gb']:g}", gpu, f"${offer['spot_price']}",
            f"${offer['on_demand_price']}", f"{offer['saving_pct']} %", f"${offer['expected_cost_per_hour']}",
        )  # fmt: skip
    _console().print(table)


if __name__ == "__main__":  # pragma: no cover
    main()
