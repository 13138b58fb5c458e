"""The ``local`` cloud: every instance is a real process on this machine (docs/architecture.md §8).

It stands in for AWS, GCP and Azure so every path of the system (provisioning,
health checks, routing, preemption, reconciliation) runs on one machine.
Instances run the sample workload agent (``python -m agent``) or the
request's ``command``, each on its own loopback port. Everything lives on disk
under ``VAR_DIR/local-cloud`` so that any process (web, Celery workers, tests, a
restarted worker) sees the same cloud.

* ``adapter``: ``LocalCloud`` (backend ``local``, one per provider it stands in for),
  and what tests, the admin and management commands do to the cloud: ``interrupt``,
  ``interruption_notice`` (spot instances only: ``InstanceNotInterruptible`` for on-demand
  ones), ``instances_all``, ``terminate_all``, ...
* ``store``: the instance records, run directories and locks on disk.
* ``processes``: launching an instance, telling whether it still runs, stopping it.
* ``launcher``: the launcher and the per-instance supervisor, standard library only,
  run in processes of their own.
* ``fleet_host`` and ``fleet_client``: with ``LOCAL_CLOUD_HOST_MODE=fleet``, one host process
  serving every new instance, and the adapter's side of it (``fleet_host_pid``).
* ``faults``: injected faults (``faults_set``), shared by every process.

Importing the package registers the ``local`` backend (``CLOUD_BACKENDS``).
"""

from placement.clouds.local.adapter import (
    CommandsDisabled,
    FleetCommandsUnsupported,
    InstanceNotInterruptible,
    LocalCloud,
    instance_log_path,
    instance_pid,
    instances_all,
    interrupt,
    interruption_notice,
    process_alive,
    terminate_all,
)
from placement.clouds.local.faults import faults_clear, faults_get, faults_set
from placement.clouds.local.fleet_client import host_pid as fleet_host_pid

# The records themselves, for tests that age or rewrite one (tests/fleet/test_reconciliation.py).
from placement.clouds.local.store import load as _load  # noqa: F401
from placement.clouds.local.store import save as _save  # noqa: F401

__all__ = [
    "CommandsDisabled",
    "FleetCommandsUnsupported",
    "InstanceNotInterruptible",
    "LocalCloud",
    "faults_clear",
    "faults_get",
    "faults_set",
    "fleet_host_pid",
    "instance_log_path",
    "instance_pid",
    "instances_all",
    "interrupt",
    "interruption_notice",
    "process_alive",
    "terminate_all",
]
