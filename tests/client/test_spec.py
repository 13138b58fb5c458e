"""A launch spec is checked before anything is sent: one message naming the field and its line, exit 2."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from arbitrage_client.cli import main
from arbitrage_client.spec import SpecError, parse_spec

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)

FULL = """\
name: trainer
requirements:
  vcpu: 8
  memory_gb: 32
  gpu_count: 1
  gpu_type: A10G
  providers: [aws, gcp]
  max_price_per_hour: 1.20
image: ghcr.io/acme/trainer:1
command: python train.py --epochs 3
env:
  EPOCHS: 3
port: 8080
access: private
storage:
  quota_gb: 10
  retention_days: 30
recovery: migrate
expected_duration: 40h
deadline: 2026-12-10T06:00:00Z
on_demand_fallback: true
"""


def test_a_full_spec_becomes_the_apis_workload_request():
    spec = parse_spec(FULL, source="train.yaml", now=NOW)

    assert spec.request == {
        "name": "trainer",
        "requirements": {
            "vcpu": 8, "memory_gb": 32.0, "gpu_count": 1, "gpu_type": "A10G", "providers": ["aws", "gcp"],
            "max_price_per_hour": "1.20",
        },
        "config": {
            "image_id": "ghcr.io/acme/trainer:1", "command": ["python", "train.py", "--epochs", "3"],
            "env": {"EPOCHS": "3"}, "health_check_port": 8080, "access": "private",
            "storage": {"enabled": True, "quota_gb": 10, "retention_days": 30},
        },
        "recovery_policy": "migrate",
        "expected_duration_seconds": 144_000,
        "deadline": "2026-12-10T06:00:00+00:00",
        "on_demand_fallback": True,
    }  # fmt: skip
    assert spec.line_of("requirements.vcpu") == 3
    assert spec.line_of("config.env.EPOCHS") == 12
    assert spec.line_of("config.storage.quota_gb") == 16


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nrequirements:\n  vcpu: 2\n  memroy_gb: 4\n",
         "s.yaml:4: requirements.memroy_gb: unknown field (did you mean memory_gb?)"),
        ("name: x\nrequirements: {vcpu: 2, memory_gb: 4}\nretries: 3\n",
         "s.yaml:3: retries: unknown field (known: name, requirements, image, command, env, port, access, storage, "
         "recovery, expected_duration, deadline, on_demand_fallback)"),
        ("name: x\nrequirements:\n  vcpu: four\n  memory_gb: 4\n",
         "s.yaml:3: requirements.vcpu: expected a whole number, got 'four'"),
        ("name: x\nrequirements: {vcpu: 2, memory_gb: 4}\nport: '8080'\n",
         "s.yaml:3: port: expected a whole number, got '8080'"),
        ("name: x\nrequirements: {vcpu: 2, memory_gb: 4}\nexpected_duration: 1h\ndeadline: 2026-12-01T00:00:00Z\n",
         "s.yaml:4: deadline: 2026-12-01T00:00:00Z is in the past"),
        ("name: x\nrequirements: {vcpu: 2, memory_gb: 4}\nexpected_duration: 1h\ndeadline: 2026-12-08T00:00:00\n",
         "s.yaml:4: deadline: give the time with its offset (Z or +02:00), got '2026-12-08T00:00:00'"),
        ("name: x\nrequirements: {vcpu: 2, memory_gb: 4}\ndeadline: 2026-12-08T00:00:00Z\n",
         "s.yaml:3: deadline: a deadline needs expected_duration (how long the job runs)"),
        ("name: x\nrequirements: {vcpu: 2, memory_gb: 4}\nexpected_duration: 2d\ndeadline: 2026-12-08T00:00:00Z\n",
         "s.yaml:4: deadline: too soon: the job needs 172800 s from now"),
        ("name: x\nrequirements: {vcpu: 2, memory_gb: 4}\nrecovery: retry\n",
         "s.yaml:3: recovery: expected one of migrate, terminate, got 'retry'"),
        ("name: x\nrequirements:\n  vcpu: 2\n", "s.yaml:3: requirements.memory_gb: missing (it is required)"),
        ("requirements: {vcpu: 2, memory_gb: 4}\n", "s.yaml:1: name: missing (it is required)"),
        ("name: x\nname: y\nrequirements: {vcpu: 2, memory_gb: 4}\n", "s.yaml:2: name: given twice (first on line 1)"),
        ("name: [x\n", "s.yaml:2: not valid YAML: expected ',' or ']', but got '<stream end>'"),
        ("- name: x\n", "s.yaml:1: spec: expected a mapping of fields, got a list"),
    ],
)  # fmt: skip
def test_a_bad_spec_is_one_message_naming_the_line_and_the_field(text, message):
    with pytest.raises(SpecError) as raised:
        parse_spec(text, source="s.yaml", now=NOW)

    assert str(raised.value) == message


def test_launch_and_quote_of_a_bad_spec_exit_2_with_that_one_line_and_send_nothing(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: x\nrequirements:\n  vcpu: 2\n  memory_gb: 4\n  gpu_cuont: 1\n")
    # Nothing listens on port 9 of loopback: had anything been sent, the exit would be 1.
    env = {"ARBITRAGE_API_URL": "http://127.0.0.1:9", "ARBITRAGE_API_KEY": "ca_x"}

    for command in ("launch", "quote"):
        result = CliRunner().invoke(main, [command, str(spec)], env=env)
        assert result.exit_code == 2
        assert result.stderr == f"error: {spec}:5: requirements.gpu_cuont: unknown field (did you mean gpu_count?)\n"
        assert result.stdout == ""


def test_a_missing_spec_file_is_exit_2(tmp_path):
    result = CliRunner().invoke(main, ["launch", str(tmp_path / "nope.yaml")], env={"ARBITRAGE_API_KEY": "ca_x"})

    assert result.exit_code == 2
    assert result.stderr == f"error: {tmp_path / 'nope.yaml'}: cannot read it (No such file or directory)\n"
