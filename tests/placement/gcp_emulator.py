"""A local Compute Engine v1 REST API, for ``GcpCloud`` (google-cloud-compute) to run against.

It answers the paths the SDK's REST transport uses, with the real API's JSON shapes
(camelCase fields, ``compute#...`` kinds, ``https://www.googleapis.com/compute/v1/...``
self links) and Google's JSON error format
``{"error": {"code", "message", "errors": [{"message", "domain", "reason"}]}}``:

* ``POST   /compute/v1/projects/{p}/zones/{z}/instances?requestId=...``: insert. The same
  ``requestId`` answers the same operation again; an existing name under another request
  id is ``409 alreadyExists``.
* ``GET    /compute/v1/projects/{p}/zones/{z}/instances[/{name}]``, ``DELETE .../instances/{name}``
* ``GET    /compute/v1/projects/{p}/aggregated/instances?filter=...`` (``items`` keyed ``zones/<zone>``)
* ``GET    /compute/v1/projects/{p}/zones/{z}/operations[/{operation}]?filter=...``
* ``POST   /token``: an OAuth token endpoint, for service-account credentials pointed here.

Lists page with ``maxResults`` / ``pageToken`` and understand the filter expressions the
adapter sends (``field = "value"``, ``!=``, ``eq`` / ``ne`` regexes, joined by ``AND`` or
parenthesised), with ``labels.<key>`` for labels.

The instance's ``scheduling`` is stored as sent, with the defaults the API fills in for a
STANDARD (on-demand) VM, the model of one sent without any: ``provisioningModel: STANDARD``,
``preemptible: false``, ``automaticRestart: true``, ``onHostMaintenance: MIGRATE``. A termination
action on a STANDARD VM is refused as the API refuses it (400 ``invalid``).

Lifecycle, counted in reads so tests are deterministic: an insert's operation answers
RUNNING until it has been read ``operation_polls`` times (default 1), then DONE; the
instance is PROVISIONING until then, then answers STAGING for ``boot_polls`` reads
(default 1), then RUNNING. A delete removes the instance at once.

Test controls: ``fail_next`` (an HTTP error for the next matching call: status, reason,
message), ``fail_next_operation`` (the next insert's operation ends DONE with this error,
and no instance), ``preempt`` (a ``compute.instances.preempted`` operation, the instance
deleted or left STOPPING/TERMINATED), ``finish`` (every operation DONE and instance RUNNING),
``forget_request_ids`` (the real API remembers request ids for a limited time), ``on_insert`` /
``on_delete`` hooks (say, to start a local process for the VM's startup script), and
``instances`` / ``operations`` / ``inserts`` / ``requests`` to read. Instances report
``nat_ip`` / ``network_ip`` (default 127.0.0.1), so a health check reaches a local server.

Use it as a context manager, from any test module::

    with GcpEmulator(project="test-project") as gcp:
        cloud = GcpCloud(project="test-project", endpoint=gcp.endpoint, credentials=AnonymousCredentials())

or ``gcp = GcpEmulator().start()`` ... ``gcp.stop()``; environment for a separate process:
``gcp.environment()`` (``GCP_PROJECT``, ``GCP_COMPUTE_ENDPOINT``, ``CLOUD_BACKENDS``).
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.placement.emulator_server import EmulatorServer

API = "https://www.googleapis.com/compute/v1"
_NAME = re.compile(r"^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$")
_ZONE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z0-9]+$")  # any zone is served; ``zones`` are listed even when empty
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_HTTP_REASON = {400: "invalid", 401: "required", 403: "forbidden", 404: "notFound", 409: "alreadyExists"}
_STATUS_TEXT = {
    400: "BAD REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT FOUND",
    409: "CONFLICT",
    429: "TOO MANY REQUESTS",
    500: "INTERNAL SERVER ERROR",
    503: "SERVICE UNAVAILABLE",
}


class ApiError(Exception):
    """An error answer, in Google's JSON error format."""

    def __init__(self, status: int, message: str, reason: str = "", domain: str = "global") -> None:
        super().__init__(message)
        self.status, self.message = status, message
        self.reason = reason or _HTTP_REASON.get(status, "backendError")
        self.domain = domain

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "code": self.status,
                "message": self.message,
                "errors": [{"message": self.message, "domain": self.domain, "reason": self.reason}],
            }
        }


@dataclass
class _Fault:
    status: int
    reason: str
    message: str
    method: str | None
    path: str | None  # a regular expression searched in the request path
    times: int


@dataclass
class Request:
    """One request the emulator received."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str] = field(default_factory=dict)  # names in lowercase


def _now() -> str:
    """RFC 3339 with milliseconds and an offset, as Compute Engine writes timestamps."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# --- filters ------------------------------------------------------------------------------

_TERM = re.compile(
    r"""\s*(?P<field>[A-Za-z][\w.-]*)\s*(?P<op>!=|=|\beq\b|\bne\b)\s*
        (?:"(?P<dq>(?:[^"\\]|\\.)*)"|'(?P<sq>(?:[^'\\]|\\.)*)'|(?P<bare>[^\s()]+))\s*""",
    re.VERBOSE,
)


def parse_filter(text: str) -> Callable[[dict[str, Any]], bool]:
    """A predicate for Compute Engine list ``filter`` expressions (the subset clients send)."""
    text = (text or "").strip()
    if not text:
        return lambda resource: True
    terms: list[tuple[str, str, str]] = []
    position = 0
    while position < len(text):
        rest = text[position:]
        if stripped := re.match(r"\s*(?:AND\b)?\s*", rest):
            position += stripped.end()
            rest = text[position:]
            if not rest:
                break
        parenthesised = rest.startswith("(")
        match = _TERM.match(text, position + (1 if parenthesised else 0))
        if not match:
            raise ApiError(400, f"Invalid value for field 'filter': '{text}'. Invalid list filter expression.")
        position = match.end()
        if parenthesised:
            if not text.startswith(")", position):
                raise ApiError(400, f"Invalid value for field 'filter': '{text}'. Invalid list filter expression.")
            position += 1
        value = next(group for group in (match["dq"], match["sq"], match["bare"]) if group is not None)
        terms.append((match["field"], match["op"], value))

    def lookup(resource: dict[str, Any], path: str) -> str | None:
        current: Any = resource
        if path.startswith("labels."):
            return (resource.get("labels") or {}).get(path.removeprefix("labels."))
        for part in path.split("."):
            if not isinstance(current, dict) or part not in current:
                return None
            current = current[part]
        return current if isinstance(current, str) else json.dumps(current)

    def predicate(resource: dict[str, Any]) -> bool:
        for name, op, value in terms:
            actual = lookup(resource, name)
            if op in ("eq", "ne"):
                matched = actual is not None and re.fullmatch(value, actual) is not None
            else:
                matched = actual == value
            if matched != (op in ("=", "eq")):
                return False
        return True

    return predicate


# --- the emulator -----------------------------------------------------------------------------


class GcpEmulator(EmulatorServer):
    methods = ("GET", "POST", "DELETE")

    def __init__(
        self,
        *,
        project: str = "test-project",
        operation_polls: int = 1,
        boot_polls: int = 1,
        nat_ip: str = "127.0.0.1",
        network_ip: str = "127.0.0.1",
        zones: tuple[str, ...] = ("us-central1-a", "us-central1-b", "us-central1-c", "europe-west4-a"),
        images: set[str] | None = None,
        require_auth: bool = False,
        max_page_size: int = 500,
    ) -> None:
        super().__init__()
        self.project = project
        self.operation_polls = operation_polls
        self.boot_polls = boot_polls
        self.nat_ip = nat_ip
        self.network_ip = network_ip
        self.zones = list(zones)
        self.images = images  # None: every image exists; else the source images that do
        self.require_auth = require_auth  # refuse requests without a bearer token (401)
        self.max_page_size = max_page_size  # list pages are at most this long, whatever maxResults asks
        #: Called (outside the emulator's lock) with the instance resource when an insert creates one, and
        #: when a delete removes one: e.g. to start and stop a local stand-in for the VM's workload.
        self.on_insert: Callable[[dict[str, Any]], None] | None = None
        self.on_delete: Callable[[dict[str, Any]], None] | None = None
        #: "<zone>/<name>" -> the instance resource, as the API answers it
        self.instances: dict[str, dict[str, Any]] = {}
        #: "<zone>/<operation name>" -> the operation resource
        self.operations: dict[str, dict[str, Any]] = {}
        #: every insert's body, in order (retries too)
        self.inserts: list[dict[str, Any]] = []
        self.requests: list[Request] = []
        self.tokens_issued = 0
        self._request_ids: dict[str, str] = {}
        self._faults: list[_Fault] = []
        self._operation_faults: list[tuple[str, str, int]] = []
        self._ids = itertools.count(int(time.time()) * 1000)
        self._lock = threading.RLock()

    @property
    def endpoint(self) -> str:
        """What ``GCP_COMPUTE_ENDPOINT`` / ``GcpCloud(endpoint=...)`` takes: ``http://127.0.0.1:<port>``."""
        return self.origin

    def environment(self) -> dict[str, str]:
        """The environment a separate process (a Celery worker) needs to run gcp against this emulator."""
        return {"CLOUD_BACKENDS": "gcp=gcp", "GCP_PROJECT": self.project, "GCP_COMPUTE_ENDPOINT": self.endpoint}

    # --- test controls -------------------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        reason: str = "",
        message: str = "",
        *,
        method: str | None = None,
        path: str | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` calls matching ``method`` / ``path`` (a regex) with this error."""
        with self._lock:
            self._faults.append(
                _Fault(
                    status,
                    reason or _HTTP_REASON.get(status, "backendError"),
                    message or _STATUS_TEXT.get(status, "error").capitalize(),
                    method,
                    path,
                    times,
                )
            )

    def fail_next_insert(self, status: int, reason: str = "", message: str = "", *, times: int = 1) -> None:
        self.fail_next(status, reason, message, method="POST", path=r"/zones/[^/]+/instances$", times=times)

    def fail_next_operation(self, code: str, message: str, *, http_status: int = 503) -> None:
        """The next insert is accepted, but its operation ends DONE with this error and leaves no instance."""
        with self._lock:
            self._operation_faults.append((code, message, http_status))

    def preempt(self, name: str, *, zone: str | None = None, leave: str | None = None) -> dict[str, Any]:
        """Reclaim a Spot VM: record its ``compute.instances.preempted`` operation, then delete it
        (termination action DELETE) or, with ``leave="STOPPING"`` / ``"TERMINATED"``, leave it so."""
        with self._lock:
            key = self._key(name, zone)
            instance = self.instances[key]
            zone = key.split("/")[0]
            operation = self._new_operation(zone, "compute.instances.preempted", instance, done=True)
            operation["user"] = "system"
            operation["statusMessage"] = "Instance was preempted."
            if leave:
                instance.update(status=leave, statusMessage="Instance was preempted.", lastStopTimestamp=_now())
            else:
                del self.instances[key]
            gone = self._public(instance)
        if self.on_delete is not None:
            self.on_delete(gone)  # the VM stops either way
        return self._public(operation)

    def finish(self) -> None:
        """Every running operation DONE, every booting instance RUNNING."""
        with self._lock:
            for operation in self.operations.values():
                if operation["status"] != "DONE":
                    self._complete(operation)
            for instance in self.instances.values():
                if instance["status"] in ("PROVISIONING", "STAGING"):
                    instance["status"] = "RUNNING"
                    instance["_bootLeft"] = 0

    def forget_request_ids(self) -> None:
        """As the real API does after a while: a retried insert now meets ``409 alreadyExists``."""
        with self._lock:
            self._request_ids.clear()

    def instance(self, name: str, zone: str | None = None) -> dict[str, Any]:
        """The instance as the API would answer it (a copy)."""
        with self._lock:
            return self._public(self.instances[self._key(name, zone)])

    def _key(self, name: str, zone: str | None) -> str:
        if "/" in name:
            return name
        if zone:
            return f"{zone}/{name}"
        matches = [key for key in self.instances if key.endswith(f"/{name}")]
        if len(matches) != 1:
            raise KeyError(f"no single instance named {name!r}: {sorted(self.instances)}")
        return matches[0]

    # --- the API -------------------------------------------------------------------------------

    def respond(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """``handle``'s answer over HTTP, as JSON."""
        status, document = self.handle(method, target, body, headers)
        return status, {"Content-Type": "application/json; charset=UTF-8"}, json.dumps(document).encode()

    def handle(self, method: str, target: str, raw: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        headers = {name.lower(): value for name, value in headers.items()}  # HTTP header names ignore case
        parts = urlsplit(target)
        path = unquote(parts.path)
        query = {key: values[-1] for key, values in parse_qs(parts.query, keep_blank_values=True).items()}
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        hooks: list[tuple[Callable[[dict[str, Any]], None], dict[str, Any]]] = []
        with self._lock:
            self.requests.append(Request(method, path, query, body, headers))
            try:
                if path == "/token" and method == "POST":
                    self.tokens_issued += 1
                    return 200, {"access_token": f"emulator-token-{self.tokens_issued}", "expires_in": 3600}
                if self.require_auth and not headers.get("authorization", "").startswith("Bearer "):
                    raise ApiError(
                        401,
                        "Request is missing required authentication credential. Expected OAuth 2 access token, "
                        "login cookie or other valid authentication credential.",
                        "required",
                    )
                self._inject(method, path)
                answer = self._route(method, path, query, body, hooks)
            except ApiError as error:
                return error.status, error.body()
        for hook, instance in hooks:
            hook(instance)
        return answer

    def _inject(self, method: str, path: str) -> None:
        for fault in self._faults:
            if (fault.method is None or fault.method == method) and (fault.path is None or re.search(fault.path, path)):
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                raise ApiError(fault.status, fault.message, fault.reason)

    def _route(self, method: str, path: str, query: dict[str, str], body: Any, hooks: list) -> tuple[int, Any]:
        match = re.fullmatch(r"/compute/v1/projects/(?P<project>[^/]+)/(?P<rest>.*)", path)
        if not match:
            raise ApiError(404, f"Not Found: {path}")
        if match["project"] != self.project:
            raise ApiError(404, f"The resource 'projects/{match['project']}' was not found")
        rest = match["rest"]
        if rest == "aggregated/instances" and method == "GET":
            return 200, self._aggregated(query)
        zoned = re.fullmatch(r"zones/(?P<zone>[^/]+)/(?P<kind>instances|operations)(?:/(?P<name>[^/]+))?", rest)
        if not zoned:
            raise ApiError(404, f"Not Found: {path}")
        zone, kind, name = zoned["zone"], zoned["kind"], zoned["name"]
        if not _ZONE.match(zone):
            raise ApiError(404, f"The resource 'projects/{self.project}/zones/{zone}' was not found")
        if kind == "operations":
            if method != "GET":
                raise ApiError(405, "Method not allowed", "methodNotAllowed")
            return 200, (self._get_operation(zone, name) if name else self._list_operations(zone, query))
        if name is None and method == "POST":
            count = len(self.instances)
            answer = self._insert(zone, query, body)
            if self.on_insert is not None and len(self.instances) > count:
                hooks.append((self.on_insert, self._public(self.instances[f"{zone}/{body['name']}"])))
            return 200, answer
        if name is None and method == "GET":
            return 200, self._list_instances(zone, query)
        if name is not None and method == "GET":
            return 200, self._get_instance(zone, name)
        if name is not None and method == "DELETE":
            instance = self.instances.get(f"{zone}/{name}")
            answer = self._delete_instance(zone, name, query)
            if self.on_delete is not None and instance is not None and f"{zone}/{name}" not in self.instances:
                hooks.append((self.on_delete, self._public(instance)))
            return 200, answer
        raise ApiError(405, "Method not allowed", "methodNotAllowed")

    # --- instances -----------------------------------------------------------------------------

    def _insert(self, zone: str, query: dict[str, str], body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "Invalid JSON payload received.", "parseError")
        self.inserts.append(copy.deepcopy(body))
        request_id = query.get("requestId", "")
        if request_id and not _UUID.match(request_id):
            raise ApiError(400, f"Invalid value for field 'requestId': '{request_id}'. Must be a UUID.")
        if request_id and request_id in self._request_ids:
            return self._public(self.operations[self._request_ids[request_id]])
        name = body.get("name", "")
        if not _NAME.match(name):
            raise ApiError(
                400,
                f"Invalid value for field 'resource.name': '{name}'. Must be a match of regex "
                "'(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'",
            )
        machine_type = body.get("machineType", "")
        if not machine_type:
            raise ApiError(400, "Invalid value for field 'resource.machineType': ''. Machine type is required.")
        disks = body.get("disks") or []
        image = ((disks[0] if disks else {}).get("initializeParams") or {}).get("sourceImage", "")
        if self.images is not None and image not in self.images:
            raise ApiError(
                400,
                f"Invalid value for field 'resource.disks[0].initializeParams.sourceImage': '{image}'. "
                "The referenced image resource cannot be found.",
            )
        scheduling = self._scheduling(body.get("scheduling"))
        key = f"{zone}/{name}"
        if key in self.instances:
            raise ApiError(409, f"The resource 'projects/{self.project}/zones/{zone}/instances/{name}' already exists")
        self_link = f"{API}/projects/{self.project}/zones/{zone}/instances/{name}"
        instance = copy.deepcopy(body)
        interfaces = instance.get("networkInterfaces") or [{"network": "global/networks/default"}]
        for index, interface in enumerate(interfaces):
            interface.update(kind="compute#networkInterface", name=f"nic{index}", networkIP=self.network_ip)
            for config in interface.get("accessConfigs") or []:
                config.update(kind="compute#accessConfig", natIP=self.nat_ip, networkTier="PREMIUM")
        instance.update(
            kind="compute#instance",
            id=str(next(self._ids)),
            creationTimestamp=_now(),
            zone=f"{API}/projects/{self.project}/zones/{zone}",
            selfLink=self_link,
            machineType=machine_type
            if machine_type.startswith("https://")
            else f"{API}/projects/{self.project}/" + machine_type,
            status="PROVISIONING",
            networkInterfaces=interfaces,
            scheduling=scheduling,
            _bootLeft=self.boot_polls,
        )
        operation = self._new_operation(zone, "insert", instance, done=False)
        if self._operation_faults:
            operation["_fault"] = self._operation_faults.pop(0)
        instance["_operation"] = f"{zone}/{operation['name']}"
        self.instances[key] = instance
        if request_id:
            self._request_ids[request_id] = f"{zone}/{operation['name']}"
        return self._public(operation)

    @staticmethod
    def _scheduling(sent: Any) -> dict[str, Any]:
        """The instance's scheduling as the API stores it: what was sent, a STANDARD VM's defaults filled in."""
        scheduling = copy.deepcopy(sent) if isinstance(sent, dict) else {}
        preemptible = bool(scheduling.get("preemptible"))
        model = scheduling.get("provisioningModel") or ("SPOT" if preemptible else "STANDARD")
        if model == "STANDARD":
            action = scheduling.get("instanceTerminationAction")
            # Compute Engine allows a termination action on STANDARD VMs only with a limited run time.
            if action and not (scheduling.get("maxRunDuration") or scheduling.get("terminationTime")):
                raise ApiError(
                    400,
                    f"Invalid value for field 'resource.scheduling.instanceTerminationAction': '{action}'. "
                    "You cannot specify a termination action for a VM instance that has the standard "
                    "provisioning model (default). To use instance termination action, the VM instance must use "
                    "the Spot or Reservation-Bound provisioning model.",
                )
            scheduling = {
                "onHostMaintenance": "MIGRATE",
                "automaticRestart": True,
                "preemptible": False,
                **scheduling,
                "provisioningModel": "STANDARD",
            }
        return scheduling

    def _get_instance(self, zone: str, name: str) -> dict[str, Any]:
        instance = self._find(zone, name)
        operation = self.operations.get(instance.get("_operation", ""))
        if operation is not None and operation["status"] != "DONE":
            self._read(operation)  # reading the instance moves its creation along too
            instance = self._find(zone, name)  # a failed insert leaves no instance
            if operation["status"] != "DONE":
                return self._public(instance)
        if instance["status"] in ("PROVISIONING", "STAGING"):
            if instance["_bootLeft"] > 0:
                instance["_bootLeft"] -= 1
                instance["status"] = "STAGING"
            else:
                instance.update(status="RUNNING", lastStartTimestamp=_now())
        return self._public(instance)

    def _find(self, zone: str, name: str) -> dict[str, Any]:
        instance = self.instances.get(f"{zone}/{name}")
        if instance is None:
            raise ApiError(404, f"The resource 'projects/{self.project}/zones/{zone}/instances/{name}' was not found")
        return instance

    def _delete_instance(self, zone: str, name: str, query: dict[str, str]) -> dict[str, Any]:
        request_id = query.get("requestId", "")
        if request_id and request_id in self._request_ids:
            return self._public(self.operations[self._request_ids[request_id]])
        instance = self._find(zone, name)
        del self.instances[f"{zone}/{name}"]
        operation = self._new_operation(zone, "delete", instance, done=False)
        if request_id:
            self._request_ids[request_id] = f"{zone}/{operation['name']}"
        return self._public(operation)

    def _list_instances(self, zone: str, query: dict[str, str]) -> dict[str, Any]:
        items = [self._public(item) for key, item in sorted(self.instances.items()) if key.startswith(f"{zone}/")]
        page, token = self._page(items, query)
        return self._list("compute#instanceList", f"zones/{zone}/instances", page, token)

    def _aggregated(self, query: dict[str, str]) -> dict[str, Any]:
        page, token = self._page([self._public(item) for _key, item in sorted(self.instances.items())], query)
        items: dict[str, Any] = {}
        for zone in sorted({*self.zones, *(key.split("/")[0] for key in self.instances)}):
            in_zone = [item for item in page if item["zone"].endswith(f"/zones/{zone}")]
            if in_zone:
                items[f"zones/{zone}"] = {"instances": in_zone}
            else:
                items[f"zones/{zone}"] = {
                    "warning": {
                        "code": "NO_RESULTS_ON_PAGE",
                        "message": f"There are no results for scope 'zones/{zone}' on this page.",
                        "data": [{"key": "scope", "value": f"zones/{zone}"}],
                    }
                }
        return self._list("compute#instanceAggregatedList", "aggregated/instances", items, token)

    # --- operations ----------------------------------------------------------------------------

    def _new_operation(self, zone: str, operation_type: str, instance: dict[str, Any], *, done: bool) -> dict:
        number = next(self._ids)
        name = f"operation-{number}-{number % 0xFFFFFF:06x}-emulator"
        operation = {
            "kind": "compute#operation",
            "id": str(number),
            "name": name,
            "zone": f"{API}/projects/{self.project}/zones/{zone}",
            "operationType": operation_type,
            "targetLink": instance["selfLink"],
            "targetId": instance["id"],
            "status": "RUNNING",
            "user": "emulator@example.iam.gserviceaccount.com",
            "progress": 0,
            "insertTime": _now(),
            "startTime": _now(),
            "selfLink": f"{API}/projects/{self.project}/zones/{zone}/operations/{name}",
            "_pollsLeft": self.operation_polls,
        }
        self.operations[f"{zone}/{name}"] = operation
        if done:
            self._complete(operation)
        return operation

    def _read(self, operation: dict[str, Any]) -> None:
        """One more read of a running operation: DONE once it has been read ``operation_polls`` times."""
        if operation["status"] == "DONE":
            return
        if operation["_pollsLeft"] <= 0:
            self._complete(operation)
        else:
            operation["_pollsLeft"] -= 1

    def _complete(self, operation: dict[str, Any]) -> None:
        operation.update(status="DONE", progress=100, endTime=_now())
        fault = operation.pop("_fault", None)
        if fault is not None:
            code, message, http_status = fault
            operation["error"] = {"errors": [{"code": code, "message": message}]}
            operation["httpErrorStatusCode"] = http_status
            operation["httpErrorMessage"] = _STATUS_TEXT.get(http_status, "ERROR")
            zone = operation["zone"].rsplit("/", 1)[-1]
            self.instances.pop(f"{zone}/{operation['targetLink'].rsplit('/', 1)[-1]}", None)

    def _get_operation(self, zone: str, name: str) -> dict[str, Any]:
        operation = self.operations.get(f"{zone}/{name}")
        if operation is None:
            raise ApiError(404, f"The resource 'projects/{self.project}/zones/{zone}/operations/{name}' was not found")
        if operation["status"] != "DONE" and operation["_pollsLeft"] <= 0:
            self._complete(operation)
        answer = self._public(operation)
        self._read(operation)  # counts this read (a DONE operation stays as it is)
        return answer

    def _list_operations(self, zone: str, query: dict[str, str]) -> dict[str, Any]:
        found = [self._public(item) for key, item in self.operations.items() if key.startswith(f"{zone}/")]
        page, token = self._page(found, query)
        return self._list("compute#operationList", f"zones/{zone}/operations", page, token)

    # --- helpers -------------------------------------------------------------------------------

    def _page(self, items: list[dict[str, Any]], query: dict[str, str]) -> tuple[list[dict[str, Any]], str]:
        """The page of the ``items`` matching the query's ``filter`` that its ``pageToken`` asks for; the next token."""
        matches = parse_filter(query.get("filter", ""))
        items = [item for item in items if matches(item)]
        try:
            size = int(query.get("maxResults") or 500)
            start = int(query.get("pageToken") or 0)
        except ValueError:
            raise ApiError(400, "Invalid value for field 'pageToken'.") from None
        size = max(1, min(size, 500, self.max_page_size))
        end = start + size
        return items[start:end], (str(end) if end < len(items) else "")

    def _list(self, kind: str, path: str, items: Any, token: str) -> dict[str, Any]:
        """A list answer: ``path`` is under the project (``zones/<zone>/instances``, ``aggregated/instances``)."""
        answer: dict[str, Any] = {
            "kind": kind,
            "id": f"projects/{self.project}/{path}",
            "items": items,
            "selfLink": f"{API}/projects/{self.project}/{path}",
        }
        if token:
            answer["nextPageToken"] = token
        return answer

    @staticmethod
    def _public(resource: dict[str, Any]) -> dict[str, Any]:
        """The resource without the emulator's own bookkeeping (keys starting with ``_``)."""
        return {key: copy.deepcopy(value) for key, value in resource.items() if not key.startswith("_")}
