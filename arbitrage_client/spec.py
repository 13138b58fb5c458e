"""A workload spec in YAML, checked here before anything is sent: ``load_spec("train.yaml")``.

Every mistake is one ``SpecError`` naming the file, the line, the field and what is wrong:
``train.yaml:4: requirements.vcpu: expected a whole number, got 'four'``. The fields and
how each maps onto the API's workload request are in docs/cli.md.
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from arbitrage_client.types import WorkloadRequest

PROVIDERS = ("aws", "gcp", "azure")
GPU_TYPES = ("T4", "L4", "A10G", "A100", "H100")
ARCHITECTURES = ("x86_64", "arm64")
RECOVERY = ("migrate", "terminate")
ACCESS = ("public", "private")
DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
DECIMAL = re.compile(r"^\d+(?:\.\d+)?$")
INT_TAG, FLOAT_TAG = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
BOOL_TAG, NULL_TAG = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null"


class SpecError(ValueError):
    """One mistake in a spec: where it is and what is wrong."""

    def __init__(self, source: str, line: int | None, field: str, message: str) -> None:
        self.source, self.line, self.field, self.message = source, line, field, message
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")


@dataclass
class Spec:
    """A checked spec: the API request it makes, and the line of each of its fields."""

    source: str
    request: WorkloadRequest
    lines: dict[str, int] = field(default_factory=dict)  # request field path ("requirements.vcpu") -> line

    def line_of(self, path: str) -> int | None:
        """The spec line of a request field named by the API (``config.env.X``), or its nearest parent's."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path.rpartition(".")[0]
        return None


def load_spec(path: str | Path, *, now: datetime | None = None) -> Spec:
    """Read and check the spec at ``path``; ``SpecError`` on the first mistake."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(source, None, "", f"cannot read it ({getattr(error, 'strerror', None) or error})") from None
    return parse_spec(text, source=source, now=now)


def parse_spec(text: str, *, source: str = "<spec>", now: datetime | None = None) -> Spec:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        raise SpecError(source, mark.line + 1 if mark else None, "", f"not valid YAML: {error.problem}") from None
    except yaml.YAMLError as error:
        raise SpecError(source, None, "", f"not valid YAML: {error}") from None
    if root is None:
        raise SpecError(source, None, "", "the spec is empty (it needs at least name and requirements)")
    return _Checker(source, now or datetime.now(UTC)).spec(root)


class _Checker:
    def __init__(self, source: str, now: datetime) -> None:
        self.source = source
        self.now = now
        self.lines: dict[str, int] = {}

    def fail(self, node: yaml.Node, name: str, message: str) -> SpecError:
        return SpecError(self.source, node.start_mark.line + 1, name, message)

    # --- the spec ------------------------------------------------------------------------------------

    def spec(self, root: yaml.Node) -> Spec:
        fields = self.mapping(root, "", SPEC_FIELDS)
        for required in ("name", "requirements"):
            if required not in fields:
                raise SpecError(self.source, root.start_mark.line + 1, required, "missing (it is required)")
        request: dict[str, Any] = {}
        config: dict[str, Any] = {}
        for key, (key_node, node) in fields.items():
            target, convert = SPEC_FIELDS[key]
            value = convert(self, node, key)
            if target.startswith("config."):
                config[target.removeprefix("config.")] = value
            else:
                request[target] = value
            self.lines.setdefault(target, key_node.start_mark.line + 1)
        if config:
            request["config"] = config
            self.lines.setdefault("config", min(line for path, line in self.lines.items() if path.startswith("config")))
        self.deadline_fits(fields, request)
        return Spec(self.source, request, self.lines)  # type: ignore[arg-type]

    def deadline_fits(self, fields: dict[str, tuple[yaml.Node, yaml.Node]], request: dict[str, Any]) -> None:
        if "deadline" not in request:
            return
        node = fields["deadline"][1]
        if "expected_duration_seconds" not in request:
            raise self.fail(node, "deadline", "a deadline needs expected_duration (how long the job runs)")
        deadline = datetime.fromisoformat(request["deadline"])
        earliest = self.now + timedelta(seconds=request["expected_duration_seconds"])
        if deadline < earliest:
            raise self.fail(
                node, "deadline", f"too soon: the job needs {request['expected_duration_seconds']} s from now"
            )

    # --- node checks ---------------------------------------------------------------------------------

    def mapping(self, node: yaml.Node, name: str, known: dict[str, Any]) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, name or "spec", f"expected a mapping of fields, got {self.kind(node)}")
        fields: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            path = f"{name}.{key}" if name else str(key)
            if key not in known:
                hint = difflib.get_close_matches(str(key), list(known), n=1)
                also = f" (did you mean {hint[0]}?)" if hint else f" (known: {', '.join(known)})"
                raise self.fail(key_node, path, f"unknown field{also}")
            if key in fields:
                raise self.fail(key_node, path, f"given twice (first on line {fields[key][0].start_mark.line + 1})")
            fields[key] = (key_node, value_node)
        return fields

    @staticmethod
    def kind(node: yaml.Node) -> str:
        if isinstance(node, yaml.MappingNode):
            return "a mapping"
        if isinstance(node, yaml.SequenceNode):
            return "a list"
        if node.tag == NULL_TAG:
            return "nothing"
        return repr(node.value)

    def scalar(self, node: yaml.Node, name: str, expected: str) -> str:
        if not isinstance(node, yaml.ScalarNode) or node.tag == NULL_TAG:
            raise self.fail(node, name, f"expected {expected}, got {self.kind(node)}")
        return node.value

    def text(self, node: yaml.Node, name: str) -> str:
        value = self.scalar(node, name, "text")
        if node.tag in (INT_TAG, FLOAT_TAG, BOOL_TAG) and node.style is None:
            raise self.fail(node, name, f"expected text, got {value!r} (quote it if it is meant as text)")
        if not value.strip():
            raise self.fail(node, name, "may not be blank")
        return value

    def integer(self, node: yaml.Node, name: str, low: int = 1, high: int | None = None) -> int:
        value = self.scalar(node, name, "a whole number")
        if node.tag != INT_TAG or node.style is not None:
            raise self.fail(node, name, f"expected a whole number, got {value!r}")
        number = int(yaml.safe_load(value))
        if number < low or (high is not None and number > high):
            span = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise self.fail(node, name, f"must be {span}, got {number}")
        return number

    def number(self, node: yaml.Node, name: str) -> float:
        value = self.scalar(node, name, "a number")
        if node.tag not in (INT_TAG, FLOAT_TAG) or node.style is not None:
            raise self.fail(node, name, f"expected a number, got {value!r}")
        number = float(yaml.safe_load(value))
        if number <= 0:
            raise self.fail(node, name, f"must be more than 0, got {value}")
        return number

    def boolean(self, node: yaml.Node, name: str) -> bool:
        value = self.scalar(node, name, "true or false")
        if node.tag != BOOL_TAG or node.style is not None:
            raise self.fail(node, name, f"expected true or false, got {value!r}")
        return bool(yaml.safe_load(value))

    def choice(self, node: yaml.Node, name: str, choices: tuple[str, ...]) -> str:
        value = self.scalar(node, name, f"one of {', '.join(choices)}")
        if value not in choices:
            raise self.fail(node, name, f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    def text_list(self, node: yaml.Node, name: str, choices: tuple[str, ...] = ()) -> list[str]:
        items = node.value if isinstance(node, yaml.SequenceNode) else [node]
        if isinstance(node, yaml.SequenceNode) and not items:
            raise self.fail(node, name, "may not be an empty list")
        if choices:
            return [self.choice(item, f"{name}.{index}", choices) for index, item in enumerate(items)]
        return [self.text(item, f"{name}.{index}") for index, item in enumerate(items)]

    def mark(self, path: str, node: yaml.Node) -> None:
        self.lines.setdefault(path, node.start_mark.line + 1)


# --- the fields ------------------------------------------------------------------------------------------
# A field's converter gets the checker, its node and its name in the spec.

Converter = Callable[[_Checker, yaml.Node, str], Any]


def _requirements(check: _Checker, node: yaml.Node, name: str) -> dict[str, Any]:
    fields = check.mapping(node, name, REQUIREMENT_FIELDS)
    for required in ("vcpu", "memory_gb"):
        if required not in fields:
            raise check.fail(node, f"{name}.{required}", "missing (it is required)")
    out = {}
    for key, (key_node, value_node) in fields.items():
        out[key] = REQUIREMENT_FIELDS[key](check, value_node, f"{name}.{key}")
        check.mark(f"requirements.{key}", key_node)
    if out.get("gpu_type") and not out.get("gpu_count"):
        raise check.fail(fields["gpu_type"][0], f"{name}.gpu_type", "a GPU type needs gpu_count of at least 1")
    return out


def _price(check: _Checker, node: yaml.Node, name: str) -> str:
    value = check.scalar(node, name, "a price in USD per hour")
    if node.tag not in (INT_TAG, FLOAT_TAG, "tag:yaml.org,2002:str") or not DECIMAL.match(value):
        raise check.fail(node, name, f"expected a price in USD per hour like 1.20, got {value!r}")
    return value


REQUIREMENT_FIELDS: dict[str, Converter] = {
    "vcpu": lambda c, n, k: c.integer(n, k, 1, 448),
    "memory_gb": lambda c, n, k: c.number(n, k),
    "gpu_count": lambda c, n, k: c.integer(n, k, 0, 16),
    "gpu_type": lambda c, n, k: c.choice(n, k, GPU_TYPES),
    "architecture": lambda c, n, k: c.choice(n, k, ARCHITECTURES),
    "providers": lambda c, n, k: c.text_list(n, k, PROVIDERS),
    "regions": lambda c, n, k: c.text_list(n, k),
    "zones": lambda c, n, k: c.text_list(n, k),
    "max_price_per_hour": _price,
}


def _command(check: _Checker, node: yaml.Node, name: str) -> list[str]:
    if isinstance(node, yaml.SequenceNode):
        return check.text_list(node, name)
    line = check.text(node, name)
    try:
        return shlex.split(line)
    except ValueError as error:
        raise check.fail(node, name, f"cannot split it into words ({error})") from None


def _env(check: _Checker, node: yaml.Node, name: str) -> dict[str, str]:
    if not isinstance(node, yaml.MappingNode):
        raise check.fail(node, name, f"expected a mapping of NAME: value, got {check.kind(node)}")
    env: dict[str, str] = {}
    for key_node, value_node in node.value:
        key = check.text(key_node, name)
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$", key):
            raise check.fail(key_node, f"{name}.{key}", "not a variable name")
        if key in env:
            raise check.fail(key_node, f"{name}.{key}", "given twice")
        env[key] = check.scalar(value_node, f"{name}.{key}", "a value (text or a number)")
        check.mark(f"config.env.{key}", key_node)
    return env


def _storage(check: _Checker, node: yaml.Node, name: str) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode) and node.tag == BOOL_TAG:
        return {"enabled": check.boolean(node, name)}
    fields = check.mapping(node, name, STORAGE_FIELDS)
    out = {"enabled": True}
    for key, (key_node, value_node) in fields.items():
        out[key] = STORAGE_FIELDS[key](check, value_node, f"{name}.{key}")
        check.mark(f"config.storage.{key}", key_node)
    return out


STORAGE_FIELDS: dict[str, Converter] = {
    "enabled": lambda c, n, k: c.boolean(n, k),
    "quota_gb": lambda c, n, k: c.integer(n, k, 1, 10_240),
    "retention_days": lambda c, n, k: c.integer(n, k, 1, 3650),
}


def _duration(check: _Checker, node: yaml.Node, name: str) -> int:
    if isinstance(node, yaml.ScalarNode) and node.tag == INT_TAG and node.style is None:
        return check.integer(node, name)
    value = check.scalar(node, name, "a duration")
    match = DURATION.match(value.replace(" ", ""))
    if not value.strip() or match is None:
        raise check.fail(node, name, f"expected seconds or a duration like 90m or 2h30m, got {value!r}")
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total < 1:
        raise check.fail(node, name, "must be at least 1 s")
    return total


def _deadline(check: _Checker, node: yaml.Node, name: str) -> str:
    value = check.scalar(node, name, "a time like 2026-12-08T06:00:00Z")
    try:
        when = datetime.fromisoformat(value.replace(" ", "T", 1) if "T" not in value else value)
    except ValueError:
        raise check.fail(node, name, f"expected a time like 2026-12-08T06:00:00Z, got {value!r}") from None
    if when.tzinfo is None:
        raise check.fail(node, name, f"give the time with its offset (Z or +02:00), got {value!r}")
    if when <= check.now:
        raise check.fail(node, name, f"{value} is in the past")
    return when.isoformat()


SPEC_FIELDS: dict[str, tuple[str, Converter]] = {
    "name": ("name", lambda c, n, k: c.text(n, k)),
    "requirements": ("requirements", _requirements),
    "image": ("config.image_id", lambda c, n, k: c.text(n, k)),
    "command": ("config.command", _command),
    "env": ("config.env", _env),
    "port": ("config.health_check_port", lambda c, n, k: c.integer(n, k, 1, 65535)),
    "access": ("config.access", lambda c, n, k: c.choice(n, k, ACCESS)),
    "storage": ("config.storage", _storage),
    "recovery": ("recovery_policy", lambda c, n, k: c.choice(n, k, RECOVERY)),
    "expected_duration": ("expected_duration_seconds", _duration),
    "deadline": ("deadline", _deadline),
    "on_demand_fallback": ("on_demand_fallback", lambda c, n, k: c.boolean(n, k)),
}

# The spec's own name of each request field, to name the spec's field in the API's errors.
SPEC_NAME_OF = {target: key for key, (target, _) in SPEC_FIELDS.items()}


def spec_field_name(request_path: str) -> str:
    """``config.health_check_port`` -> ``port``; ``requirements.vcpu`` stays."""
    for target, key in sorted(SPEC_NAME_OF.items(), key=lambda item: -len(item[0])):
        if request_path == target or request_path.startswith(target + "."):
            return key + request_path[len(target) :]
    return request_path
