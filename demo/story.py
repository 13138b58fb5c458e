"""The demo's story: a customer quotes, submits, watches, calls, survives an interruption, terminates, pays.

Every stage that waits has a deadline; a stage that does not happen raises ``DemoFailed``
with a one-line reason. ``Story.cleanup`` stops whatever was started, whatever happened.
"""

from __future__ import annotations

import contextlib
import copy
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO, TypeVar

from demo import DemoFailed
from demo.client import Answer, ApiClient, error_message
from demo.endpoint import EndpointCall, EndpointPoller, answer_line, call_gateway
from demo.processes import ServiceGroup, free_port, service_commands
from demo.render import (
    STATE_HEADERS,
    STATE_WIDTHS,
    LiveTable,
    cost_lines,
    current_instance,
    duration,
    heading,
    money,
    offers_table,
    per_hour,
    percent,
    state_row,
    table,
)

T = TypeVar("T")

# Deadlines, in seconds.
START_TIMEOUT = 60
PROVISION_TIMEOUT = 90
GATEWAY_TIMEOUT = 30
CHECKPOINT_TIMEOUT = 30
MIGRATION_TIMEOUT = 90
TERMINATE_TIMEOUT = 60
BILLING_TIMEOUT = 20
CLEANUP_TERMINATE_TIMEOUT = 20
POLL_SECONDS = 0.5
# Between the interruption notice and the reclaim: time for the agent's final checkpoint.
INTERRUPTION_GRACE_SECONDS = 10
# The long job's agent checkpoints this often (its AGENT_CHECKPOINT_SECONDS).
CHECKPOINT_EVERY_SECONDS = 2

ADMIN_USER, ADMIN_PASSWORD = "demo", "demo-password"
CUSTOMER_NAME = "Demo customer"

LONG_JOB = "long-job"
LONG_JOB_BASE = {"vcpu": 2, "memory_gb": 4}
DEADLINE_JOB = "deadline-job"
# An hour of work due in an hour and a quarter: less slack than two launches (LAUNCH_OVERHEAD_SECONDS),
# so the arbitrage policy may not risk spot and runs it on demand.
DEADLINE_JOB_WORK_SECONDS = 3600
DEADLINE_JOB_SLACK_SECONDS = 900
DECISION_TIMEOUT = 60
WORKLOADS: dict[str, dict[str, Any]] = {
    "cpu-batch": {"requirements": {"vcpu": 4, "memory_gb": 16}, "recovery_policy": "terminate"},
    "gpu-inference": {"requirements": {"vcpu": 4, "memory_gb": 16, "gpu_count": 1}, "recovery_policy": "terminate"},
    LONG_JOB: {
        "requirements": LONG_JOB_BASE,  # pinned to two zones on two clouds: see cross_cloud_requirements
        "config": {
            "storage": {"enabled": True, "quota_gb": 1, "retention_days": 1},
            "env": {"AGENT_CHECKPOINT_SECONDS": str(CHECKPOINT_EVERY_SECONDS)},
        },
        "recovery_policy": "migrate",
    },
    DEADLINE_JOB: {
        "requirements": {"vcpu": 2, "memory_gb": 8},
        "expected_duration_seconds": DEADLINE_JOB_WORK_SECONDS,  # its deadline is set when it is submitted
        "recovery_policy": "migrate",
    },
}
TERMINAL = {"FAILED", "TERMINATED"}


@dataclass
class Setup:
    """What the database set-up made: the customer's API key and catalog counts."""

    api_key: str
    offers: int
    instance_types: int


def pool(offer: dict[str, Any]) -> tuple[str, str, str, str]:
    return (offer["provider"], offer["region"], offer["availability_zone"], offer["instance_type"])


def cross_cloud_requirements(
    quote: Callable[[dict[str, Any], int], list[dict[str, Any]]], base: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Requirements under which the best offer and the next best once its pool is blocked are on two clouds.

    The workload is pinned to two zones: the best offer's and one of another
    cloud's, checked with the quote itself (the next candidate after the first is
    where a migration goes once the first pool is blocked). Returns the
    requirements, the first offer and the one the workload should move to.
    """
    candidates = quote(base, 50)
    first = candidates[0]
    tried: set[str] = set()
    for other in candidates[1:]:
        if other["provider"] == first["provider"] or other["availability_zone"] in tried:
            continue
        tried.add(other["availability_zone"])
        pinned = {**base, "zones": [first["availability_zone"], other["availability_zone"]]}
        ranked = quote(pinned, 2)
        if len(ranked) == 2 and pool(ranked[0]) == pool(first) and ranked[1]["provider"] != first["provider"]:
            return pinned, ranked[0], ranked[1]
        if len(tried) >= 5:
            break
    raise DemoFailed(f"no two zones on different clouds rank {first['provider']} first and another cloud next")


@dataclass
class Story:
    base_dir: Path
    var_dir: Path
    env: dict[str, str]  # the environment of every process the demo starts
    out: TextIO
    tty: bool
    prepare: Callable[[], Setup]  # migrations, catalog, customer, operator (in this process)
    stop_instances: Callable[[], int]  # the local cloud's terminate_all
    keep_running: bool = False
    started: float = field(default_factory=time.monotonic)
    timings: list[tuple[str, float]] = field(default_factory=list)
    results: list[str] = field(default_factory=list)
    workloads: dict[str, str] = field(default_factory=dict)  # name -> id
    endpoints: dict[str, str] = field(default_factory=dict)  # name -> endpoint name
    services: ServiceGroup | None = None
    api: ApiClient | None = None
    web_url: str = ""
    gateway_url: str = ""
    gateway_port: int = 0
    api_key: str = ""
    finished: bool = False  # every stage happened
    specs: dict[str, dict[str, Any]] = field(default_factory=lambda: copy.deepcopy(WORKLOADS))

    # --- output --------------------------------------------------------------------------------------

    def say(self, *lines: str) -> None:
        self.out.write("".join(line + "\n" for line in lines))
        self.out.flush()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def log_dir(self) -> Path:
        return self.var_dir / "logs"

    def relative(self, path: Path) -> str:
        with contextlib.suppress(ValueError):
            return str(path.relative_to(self.base_dir))
        return str(path)

    # --- the story -----------------------------------------------------------------------------------

    def run(self) -> None:
        self.say(
            "Compute arbitrage: the whole story on one machine",
            "==================================================",
            "A customer runs workloads on the cheapest spot capacity across AWS, GCP and Azure, through",
            "the REST API. Here everything runs locally: SQLite, a broker on the filesystem, and a",
            '"local cloud" that stands in for all three clouds by running each instance as a process.',
            f"Data and logs: {self.relative(self.var_dir)}/ (wiped at every start).",
        )
        stages: list[tuple[str, Callable[[], None]]] = [
            ("Set-up: database, price catalog, a customer and its API key", self.stage_setup),
            ("Start the service: web, worker, beat and the gateway", self.stage_start),
            ("Quote a placement", self.stage_quote),
            ("Submit four workloads", self.stage_submit),
            ("Watch them provision", self.stage_provision),
            ("Call the long job through the gateway", self.stage_call),
            ("A spot interruption: the long job migrates to another cloud", self.stage_migrate),
            ("A job with a deadline: what the arbitrage controller decided", self.stage_deadline),
            ("Terminate everything", self.stage_terminate),
            ("What it cost", self.stage_cost),
            ("Where to look", self.stage_where),
        ]
        for number, (title, stage) in enumerate(stages, start=1):
            self.say(*heading(number, title))
            began = time.monotonic()
            stage()
            self.timings.append((title, time.monotonic() - began))
            self.note(f"stage {number} took {self.timings[-1][1]:.1f} s: {title}")
        self.summary()
        self.finished = True
        if self.keep_running:
            self.hold()

    def stage_setup(self) -> None:
        setup = self.prepare()
        self.say(
            f"  database migrated; catalog: {setup.offers} spot offers of {setup.instance_types} instance types",
            f'  customer "{CUSTOMER_NAME}" with API key {setup.api_key} (stored hashed; only this demo knows it)',
            f"  operator for the admin: {ADMIN_USER} / {ADMIN_PASSWORD}",
        )
        self.api_key = setup.api_key

    def stage_start(self) -> None:
        web_port, gateway_port = free_port(), free_port()
        while gateway_port == web_port:
            gateway_port = free_port()
        self.web_url = f"http://127.0.0.1:{web_port}"
        self.gateway_url = f"http://127.0.0.1:{gateway_port}"
        self.gateway_port = gateway_port
        env = {**self.env, "PUBLIC_API_URL": self.web_url}  # where instances' agents reach the API
        self.services = ServiceGroup(cwd=self.base_dir, env=env, log_dir=self.log_dir)
        commands = service_commands(
            web_port=web_port, gateway_port=gateway_port, beat_pidfile=self.var_dir / "celerybeat.pid"
        )
        for name, command in commands.items():
            self.services.start(name, command)
        self.services.wait_http("web", f"{self.web_url}/healthz", timeout=START_TIMEOUT)
        self.services.wait_http("gateway", f"{self.gateway_url}/healthz", timeout=START_TIMEOUT)
        self.services.wait_log("worker", " ready.", timeout=START_TIMEOUT)
        self.api = ApiClient(self.web_url, self.api_key)
        self.say(
            f"  web      {self.web_url}/  (REST API, admin)",
            f"  gateway  {self.gateway_url}/  (workload endpoints: <id>.workloads.localhost or /w/<id>/)",
            "  worker and beat (Celery)",
            f"  logs     {self.relative(self.log_dir)}/",
        )

    def quote(self, requirements: dict[str, Any], limit: int) -> list[dict[str, Any]]:
        answer = self.api.quote(requirements, limit=limit)
        candidates = answer.get("candidates") or []
        if not candidates:
            raise DemoFailed(f"the quote for {requirements} found no offer")
        return candidates

    def stage_quote(self) -> None:
        requirements = self.specs["cpu-batch"]["requirements"]
        candidates = self.quote(requirements, 5)
        self.say(
            f"  POST /api/v1/placement/quote for {_brief(requirements)}: the best offers, ranked by expected cost",
            "  (the spot price adjusted for the pool's interruption risk):",
            *offers_table(candidates),
        )
        pinned, first, second = cross_cloud_requirements(self.quote, LONG_JOB_BASE)
        self.specs[LONG_JOB]["requirements"] = pinned
        self.say(
            "",
            f"  The long job ({_brief(LONG_JOB_BASE)}) is pinned to zones {' and '.join(pinned['zones'])}:",
            f"  its best offer is {_where(first)} at {per_hour(first['spot_price'])}; once that pool is blocked",
            f"  the next best is on another cloud: {_where(second)} at {per_hour(second['spot_price'])}.",
        )

    def stage_submit(self) -> None:
        rows = []
        due = datetime.now(UTC) + timedelta(seconds=DEADLINE_JOB_WORK_SECONDS + DEADLINE_JOB_SLACK_SECONDS)
        self.specs[DEADLINE_JOB]["deadline"] = due.isoformat(timespec="seconds").replace("+00:00", "Z")
        for name, spec in self.specs.items():
            created = self.api.create({"name": name, **spec})
            self.workloads[name] = created["id"]
            self.endpoints[name] = created["endpoint"]
            rows.append((name, created["id"], created["status"], _brief(created["requirements"]), _extras(spec)))
        self.say(f"  POST /api/v1/workloads, {len(self.specs)} times:")
        self.say(*table(("workload", "id", "state", "needs", "options"), rows))

    def details(self) -> dict[str, dict[str, Any]]:
        return {name: self.api.get(wid) for name, wid in self.workloads.items()}

    def watch(self, until: Callable[[dict[str, dict[str, Any]]], bool], *, timeout: float, what: str) -> None:
        """Redraw the state table until ``until(details)``; fail on a FAILED workload or at the deadline."""
        live = LiveTable(self.out, STATE_HEADERS, tty=self.tty, widths=STATE_WIDTHS)
        deadline = time.monotonic() + timeout
        while True:
            self.services.check_alive()
            details = self.details()
            live.update([state_row(name, detail) for name, detail in details.items()])
            failed = [(n, d) for n, d in details.items() if d["status"] == "FAILED"]
            if failed:
                name, detail = failed[0]
                raise DemoFailed(f"{name} FAILED: {detail.get('failure_reason') or 'no reason given'}")
            if until(details):
                return
            if time.monotonic() >= deadline:
                late = ", ".join(f"{n} {d['status']}" for n, d in details.items())
                raise DemoFailed(f"{what} did not happen within {timeout} s ({late})")
            time.sleep(POLL_SECONDS)

    def stage_provision(self) -> None:
        self.say("  GET /api/v1/workloads/<id> for each, until all are RUNNING:", "")
        began = time.monotonic()
        self.watch(
            lambda details: all(d["status"] == "RUNNING" for d in details.values()),
            timeout=PROVISION_TIMEOUT,
            what="every workload RUNNING",
        )
        took = time.monotonic() - began
        self.say("", f"  all {len(self.workloads)} RUNNING after {duration(took)}")
        self.results.append(f"quoted, then {len(self.workloads)} workloads placed and RUNNING in {duration(took)}")

    def endpoint_url(self, name: str) -> str:
        """The workload's endpoint name as a URL on the gateway's port (``{id}.workloads.<WORKLOAD_DOMAIN>``)."""
        return f"http://{self.endpoints[name]}:{self.gateway_port}/"

    def call_endpoint(self, name: str, *, timeout: float = 60) -> Answer:
        return call_gateway(self.gateway_port, self.endpoints[name], timeout=timeout)

    def stage_call(self) -> None:
        self.say(
            f"  Its endpoint name is {self.endpoints[LONG_JOB]}; the gateway answers for it:",
            f"  GET {self.endpoint_url(LONG_JOB)}",
            f"  (sent to 127.0.0.1 with that Host header; {self.gateway_url}/w/<id>/ works too)",
        )
        first = self.call_endpoint(LONG_JOB)
        if first.status != 200 or not isinstance(first.body, dict):
            raise DemoFailed(f"the long job's endpoint answered {error_message(first)}")
        self.say(f"  -> {answer_line(first.body)}")
        called = time.monotonic()
        # Its agent saves its progress to the workload's storage every few seconds.
        checkpoint = self.wait(self.latest_checkpoint, timeout=CHECKPOINT_TIMEOUT, what="a checkpoint of the long job")
        self.say(
            f"  Its agent checkpoints its progress to the workload's storage every {CHECKPOINT_EVERY_SECONDS} s:",
            f"  GET /api/v1/workloads/<id>/storage/checkpoints/latest -> {checkpoint['checkpoint_id']}, "
            f"progress {_checkpoint_progress(checkpoint)}",
        )
        time.sleep(max(0.0, called + 1.5 - time.monotonic()))
        again = self.call_endpoint(LONG_JOB)
        if again.status != 200 or not isinstance(again.body, dict):
            raise DemoFailed(f"the long job's endpoint answered {error_message(again)}")
        self.say(f"  a moment later -> {answer_line(again.body)} (it counts on)")
        self.results.append("the long job answered at its endpoint name through the gateway")

    def latest_checkpoint(self) -> dict[str, Any] | None:
        body = self.api.latest_checkpoint(self.workloads[LONG_JOB])
        return body if body is not None and "checkpoint_id" in body else None

    def wait(self, check: Callable[[], T | None], *, timeout: float, what: str) -> T:
        deadline = time.monotonic() + timeout
        while True:
            self.services.check_alive()
            result = check()
            if result:
                return result
            if time.monotonic() >= deadline:
                raise DemoFailed(f"{what} did not happen within {timeout} s")
            time.sleep(POLL_SECONDS)

    def stage_migrate(self) -> None:
        workload_id = self.workloads[LONG_JOB]
        old = current_instance(self.api.get(workload_id))
        self.say(
            f"  The long job runs on {_where(old)} (instance {old['instance_id']}).",
            "  The customer keeps calling its endpoint through the gateway, in a loop:",
            f"    GET {self.endpoint_url(LONG_JOB)}",
            "  while the operator gives its instance a spot interruption notice, as the cloud would:",
            f"    $ manage.py spot_interrupt {workload_id} --grace {INTERRUPTION_GRACE_SECONDS}",
        )
        poller = EndpointPoller(self.gateway_port, self.endpoints[LONG_JOB])
        poller.start()
        try:
            self._migrate(workload_id, old, poller)
        finally:
            poller.stop()

    def _migrate(self, workload_id: str, old: dict[str, Any], poller: EndpointPoller) -> None:
        first = self.wait(poller.next_call, timeout=GATEWAY_TIMEOUT, what="an answer of the long job's endpoint")
        if first.status != 200:
            raise DemoFailed(f"the long job's endpoint answered {first.error} before the interruption")
        notice = time.monotonic()
        self.say(f"      {self.spot_interrupt(workload_id)}", "")
        deadline = notice + MIGRATION_TIMEOUT
        calls: list[EndpointCall] = [first]
        last_state, last_printed, new = "RUNNING", first, None

        def stamp(at: float) -> str:
            return f"  +{max(at - notice, 0):4.1f} s  "

        while True:
            self.services.check_alive()
            shown: list[tuple[float, str]] = []  # (when, line): printed in time order
            detail = self.api.get(workload_id)
            asked = time.monotonic()
            state, current = detail["status"], current_instance(detail)
            for call in poller.drain():
                calls.append(call)
                changed = call.instance_id != last_printed.instance_id or call.status != last_printed.status
                if changed or call.took > 1 or call.at - last_printed.at >= 2:
                    shown.append((call.at + call.took, "gateway  " + call.line()))
                    last_printed = call
            if state in TERMINAL:
                raise DemoFailed(f"the long job went {state} instead of migrating: {detail.get('failure_reason')}")
            if state != last_state:
                placed = f" on {_where(current)}" if state == "RUNNING" and current else ""
                shown.append((asked, f"state    {state}{placed}"))
                last_state = state
            self.say(*(stamp(at) + line for at, line in sorted(shown)))
            moved = state == "RUNNING" and current is not None and current["instance_id"] != old["instance_id"]
            if moved and any(c.status == 200 and c.instance_id == current["instance_id"] for c in calls):
                new = current
                break
            if time.monotonic() >= deadline:
                raise DemoFailed(
                    f"the long job did not answer from a new instance within {MIGRATION_TIMEOUT} s (state {state})"
                )
            time.sleep(0.3)
        took = time.monotonic() - notice

        # The progress the old instance showed before the notice: the final checkpoint holds at least that.
        before = max(c.progress for c in calls if c.instance_id == old["instance_id"] and c.at < notice)
        answer = next(c for c in calls if c.instance_id == new["instance_id"])
        restored = answer.body.get("restored_progress")
        if new["provider"] == old["provider"]:
            raise DemoFailed(f"the long job moved within {old['provider']} ({_where(new)}), not to another cloud")
        if restored is None:
            raise DemoFailed("the new instance restarted the work from 0: no checkpoint was restored")
        if int(restored) < before:
            raise DemoFailed(f"the new instance restored progress {restored}, older than the {before} seen before")
        time.sleep(1.5)
        later = self.call_endpoint(LONG_JOB)
        now = later.body.get("progress") if later.status == 200 and isinstance(later.body, dict) else "?"
        last_old = max(c.progress for c in calls if c.instance_id == old["instance_id"])
        final = [e for e in detail.get("events") or [] if e.get("name") == "final-checkpoint"]
        saved = f" ({final[-1]['detail'].get('checkpoint')})" if final and final[-1].get("detail") else ""
        ok = sum(1 for c in calls if c.status == 200)
        held = max((c.took for c in calls), default=0)
        lines = [
            "",
            f"  moved:    {_where(old)} -> {_where(new)}, running again {duration(took)} after the notice",
            f"  work:     the {old['provider']} instance counted to {last_old}; on the notice its agent saved a final",
            f"            checkpoint{saved}; the {new['provider']} instance restored progress {restored} from it",
            f"            and counts on ({now} a moment later): it resumed from the checkpoint, not from 0",
        ]
        if last_old > int(restored):
            redone = last_old - int(restored)
            lines.append(f"            (the {redone} it counted after that checkpoint, before it stopped, are redone)")
        lines += [
            f"  endpoint: the same name answered {ok} of {len(calls)} calls during the move; the longest call was",
            f"            held {held:.1f} s by the gateway until the new instance was ready",
        ]
        if ok < len(calls):
            lines.append(
                f"            ({len(calls) - ok} were asked to retry later: the gateway's 503 with Retry-After)"
            )
        self.say(*lines)
        self.results.append(
            f"spot interruption on {old['provider']}: migrated to {new['provider']} in {duration(took)}, "
            f"resumed from checkpoint ({restored}), endpoint answered {ok}/{len(calls)}"
        )

    def spot_interrupt(self, workload_id: str) -> str:
        """``manage.py spot_interrupt`` as the operator would run it; its one-line answer."""
        command = [
            sys.executable, str(self.base_dir / "manage.py"), "spot_interrupt", workload_id,
            "--grace", str(INTERRUPTION_GRACE_SECONDS),
        ]  # fmt: skip
        env = {**self.env, "PUBLIC_API_URL": self.web_url}
        try:
            done = subprocess.run(
                command, cwd=self.base_dir, env=env, capture_output=True, text=True, timeout=60, check=False
            )
        except subprocess.TimeoutExpired:
            raise DemoFailed("manage.py spot_interrupt did not finish within 60 s") from None
        output = (done.stdout.strip() or done.stderr.strip()).splitlines()
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise DemoFailed(f"manage.py spot_interrupt failed: {reason}")
        return output[-1] if output else "interruption notice given"

    def stage_deadline(self) -> None:
        workload_id = self.workloads[DEADLINE_JOB]
        spec = self.specs[DEADLINE_JOB]
        self.say(
            f"  {DEADLINE_JOB} needs {duration(spec['expected_duration_seconds'])} of compute by {spec['deadline']}:",
            f"  {duration(DEADLINE_JOB_SLACK_SECONDS)} of slack, less than two launches. The controller ticks every",
            "  ARBITRAGE_TICK_SECONDS; each decision that changes something is on the workload's timeline",
            f"  (GET /api/v1/workloads/{workload_id}, events named arbitrage-decision):",
            "",
        )

        def decided() -> list[dict[str, Any]] | None:
            detail = self.api.get(workload_id)
            decisions = [event for event in detail["events"] if event["name"] == "arbitrage-decision"]
            return (
                decisions if decisions and detail["market"] == "on_demand" and detail["status"] == "RUNNING" else None
            )

        decisions = self.wait(decided, timeout=DECISION_TIMEOUT, what=f"{DEADLINE_JOB} on demand by the controller")
        for event in decisions:
            self.say(*(f"    {line}" for line in textwrap.wrap(event["message"], 96)))
        detail = self.api.get(workload_id)
        instance = current_instance(detail)
        self.say(
            "",
            f"  now {detail['status']} on {detail['market']} in {_where(instance)}, on track: {detail['on_track']}",
        )
        self.results.append(
            f"the deadline job was moved to on-demand by the controller ({len(decisions)} decision(s) on its timeline)"
        )

    def stage_terminate(self) -> None:
        self.say("  POST /api/v1/workloads/<id>/terminate for each, then until all are TERMINATED:", "")
        for workload_id in self.workloads.values():
            self.api.terminate(workload_id)
        began = time.monotonic()
        self.watch(
            lambda details: all(d["status"] == "TERMINATED" for d in details.values()),
            timeout=TERMINATE_TIMEOUT,
            what="every workload TERMINATED",
        )
        self.say("", f"  all {len(self.workloads)} TERMINATED after {duration(time.monotonic() - began)}")
        self.results.append("all terminated through the API")

    def final_costs(self) -> dict[str, dict[str, Any]] | None:
        """Every workload's ``cost``, once every segment has ended (its usage record written)."""
        costs = {}
        for name, detail in self.details().items():
            cost = detail.get("cost")
            if not isinstance(cost, dict) or "segments" not in cost:
                raise DemoFailed("the workload detail has no cost field (GET /api/v1/workloads/<id>)")
            if any(segment.get("ended_at") is None for segment in cost["segments"]):
                return None
            costs[name] = cost
        return costs

    def stage_cost(self) -> None:
        costs = self.wait(self.final_costs, timeout=BILLING_TIMEOUT, what="the final bill of every workload")
        self.say("  From each workload's cost (GET /api/v1/workloads/<id>): one segment per instance,", "")
        lines, totals = cost_lines(list(costs.items()))
        self.say(*lines)
        segments = costs[LONG_JOB]["segments"]
        if len(segments) < 2:
            raise DemoFailed(f"the long job's bill has {len(segments)} segment(s); expected one per instance (2)")
        if totals.spend <= 0:
            raise DemoFailed("the bill is empty: no spend was recorded")
        self.results.append(
            f"billed {money(totals.spend)} for {sum(len(c['segments']) for c in costs.values())} instance segments: "
            f"{percent(totals.saving, totals.on_demand)} less than on-demand ({money(totals.on_demand)})"
        )

    def stage_where(self) -> None:
        self.say(
            "  The demo stops its service when it ends; its data stays in "
            f"{self.relative(self.var_dir)}/ until the next demo.",
            "  To browse it (admin login demo / demo-password):",
            f"    ARBITRAGE_VAR_DIR={self.relative(self.var_dir)} make run",
            "    admin     http://127.0.0.1:8000/admin/",
            "    API docs  http://127.0.0.1:8000/api/docs/ (Swagger UI; OpenAPI schema at /api/schema/)",
            "  Or keep this demo's service up at the end: .venv/bin/python manage.py demo --keep-running",
            f"  Service logs: {self.relative(self.log_dir)}/ (web, worker, beat, gateway);"
            f" instances' logs: {self.relative(self.var_dir)}/local-cloud/run/",
        )

    def summary(self) -> None:
        setup = sum(seconds for title, seconds in self.timings[:2])
        self.say("", "Summary", "-------", *(f"  ok  {line}" for line in self.results))
        self.say(
            "",
            f"  the story took {duration(self.elapsed())}: set-up and start {duration(setup)}, "
            f"the customer's part {duration(self.elapsed() - setup)}",
        )

    def hold(self) -> None:
        self.say(
            "",
            f"The service keeps running: admin {self.web_url}/admin/ ({ADMIN_USER} / {ADMIN_PASSWORD}),",
            f"API docs {self.web_url}/api/docs/. Ctrl-C stops it.",
        )
        while True:
            self.services.check_alive()
            time.sleep(1)

    def note(self, text: str) -> None:
        """A line for the demo's own log (not the screen)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / "demo.log").open("a") as log:
            log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")

    # --- cleanup -------------------------------------------------------------------------------------

    def cleanup(self) -> tuple[list[str], list[str]]:
        """Terminate what still runs, stop the services and every local-cloud instance.

        Returns ``(notes, problems)``: what was done beyond the usual, and what could not be.
        """
        notes: list[str] = []
        problems: list[str] = []
        if self.api is not None and self.services is not None:
            # Through the API while the service runs, so the workloads end (and are billed) as usual.
            try:
                self.services.check_alive()
                self._terminate_leftovers()
            except DemoFailed as failure:
                self.note(f"workloads not terminated through the API: {failure}")
        if self.services is not None:
            began = time.monotonic()
            killed = self.services.stop_all()
            self.note(f"services stopped in {time.monotonic() - began:.1f} s; killed after the grace period: {killed}")
        try:
            stopped = self.stop_instances()
        except OSError as error:
            problems.append(f"could not stop the local cloud's instances: {error}")
        else:
            if stopped:
                notes.append(f"stopped {stopped} local-cloud instance(s) directly")
        return notes, problems

    def _terminate_leftovers(self) -> None:
        running = []
        for workload_id in self.workloads.values():
            detail = self.api.get(workload_id)
            if detail["status"] in TERMINAL:
                continue
            if detail["status"] != "STOPPING":
                self.api.terminate(workload_id, already_stopping_ok=True)
            running.append(workload_id)
        deadline = time.monotonic() + CLEANUP_TERMINATE_TIMEOUT
        while running and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
            running = [w for w in running if self.api.get(w)["status"] not in TERMINAL]


def _brief(requirements: dict[str, Any]) -> str:
    text = f"{requirements['vcpu']} vCPU, {requirements['memory_gb']:g} GiB"
    if requirements.get("gpu_count"):
        text += f", {requirements['gpu_count']} GPU"
    return text


def _extras(spec: dict[str, Any]) -> str:
    parts = []
    if (spec.get("config") or {}).get("storage", {}).get("enabled"):
        parts.append("storage on")
    parts.append(f"recovery {spec.get('recovery_policy', 'migrate')}")
    return ", ".join(parts)


def _where(offer: dict[str, Any]) -> str:
    return f"{offer['provider']} {offer['region']} {offer['instance_type']}"


def _checkpoint_progress(checkpoint: dict[str, Any]) -> object:
    return ((checkpoint.get("manifest") or {}).get("metadata") or {}).get("progress", "?")
