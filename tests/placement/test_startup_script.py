"""The boot script the real clouds run: the environment, then the command under the log shipper, run for real."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from accounts.tokens import agent_token_for
from placement.clouds.base import SHIP_SOURCE, InstanceRequest, startup_script
from tests.factories import WorkloadFactory, WorkloadInstanceFactory
from workloads.models import WorkloadStatus

AWS_USER_DATA_LIMIT = 16 * 1024


def request(command: tuple[str, ...], **env: str) -> InstanceRequest:
    return InstanceRequest(
        idempotency_token="ca-boot",
        region="us-east-1",
        availability_zone="us-east-1a",
        instance_type="m5.large",
        max_price_per_hour=Decimal("0.10"),
        tags={},
        command=command,
        env=env,
    )


def boot(script: str, tmp_path, *, path: str) -> subprocess.CompletedProcess:
    """Run the script with /bin/sh as a cloud would, writing the shipper under ``tmp_path``."""
    env = {"PATH": path, "ARBITRAGE_SHIP_DIR": str(tmp_path)}
    return subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, timeout=120, check=False)


def test_the_script_with_a_long_command_stays_within_the_user_data_limit():
    assert len(SHIP_SOURCE.read_bytes()) < 5 * 1024
    command = ("python3", "train.py", *(f"--option-{n}=value-{n}" for n in range(150)))
    script = startup_script(request(command, WORKLOAD_AGENT_TOKEN="wat_" + "t" * 60, HF_HOME="/data/hf cache"))
    assert len(" ".join(command)) > 3000
    assert len(script.encode()) < AWS_USER_DATA_LIMIT
    assert "export HF_HOME='/data/hf cache'\n" in script
    assert f'\n  exec python3 "$ship" -- {" ".join(command)}\nfi\n' in script
    assert script.endswith(f"\nexec {' '.join(command)}\n")


def test_an_explicit_user_data_wins_and_no_command_runs_no_shipper():
    assert startup_script(dataclasses.replace(request(("x",)), user_data="#!/bin/sh\n")) == "#!/bin/sh\n"
    assert "ship" not in startup_script(request(()))


@pytest.mark.django_db(transaction=True)
def test_the_script_runs_the_command_through_the_shipper_into_the_workloads_log(
    tmp_path, live_server, customer_and_key
):
    customer, key = customer_and_key
    workload = WorkloadFactory(customer=customer, status=WorkloadStatus.RUNNING)
    WorkloadInstanceFactory(workload=workload, provider="gcp")
    command = (sys.executable, "-c", "import os; print('booted with', os.environ['GREETING']); raise SystemExit(6)")
    script = startup_script(
        request(
            command,
            GREETING="hello world",
            ARBITRAGE_API_URL=live_server.url,
            WORKLOAD_AGENT_TOKEN=agent_token_for(workload.id),
        )
    )

    done = boot(script, tmp_path, path="/usr/bin:/bin")

    assert (done.returncode, done.stdout) == (6, b"booted with hello world\n"), done.stderr
    assert (tmp_path / "arbitrage-ship.py").read_text() == SHIP_SOURCE.read_text()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    lines = api.get(f"/api/v1/workloads/{workload.id}/logs").json()["lines"]
    assert [(line["provider"], line["text"]) for line in lines] == [("gcp", "booted with hello world")]


def test_without_python3_on_the_image_the_command_runs_as_it_is(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sh").symlink_to("/bin/sh")
    script = startup_script(request(("/bin/sh", "-c", "echo plain; exit 4"), ARBITRAGE_API_URL="http://127.0.0.1:9"))
    done = boot(script, tmp_path, path=str(bin_dir))
    assert (done.returncode, done.stdout) == (4, b"plain\n"), done.stderr
    assert not (tmp_path / "arbitrage-ship.py").exists()


def test_where_the_shipper_cannot_be_written_the_command_still_runs(tmp_path):
    script = startup_script(request(("/bin/sh", "-c", "echo anyway; exit 0")))
    done = boot(script, tmp_path / "no" / "such" / "dir", path="/usr/bin:/bin")
    assert (done.returncode, done.stdout) == (0, b"anyway\n"), done.stderr
