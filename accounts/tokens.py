"""Per-workload tokens, derived rather than stored.

* agent token ``wat_<workload id>_<hmac>``: what a workload's own instance uses
  to call the API (checkpoints, interruption reports);
* access token ``wac_<workload id>_<hmac>``: what a client presents to reach a
  private workload's endpoint through the gateway.

Each is HMAC-SHA256(SECRET_KEY, purpose + workload id), so it can be derived
again for every instance the workload ever gets (migrations included) and it
grants access to that one workload only.

An agent token's standing follows its workload: it works fully while the
workload lives, only reads (lists and downloads its storage) once the workload
is terminated and until its storage retention ends, and not at all after that
or for a workload that does not exist. The workloads app, which knows both the
workload and its storage, registers where that standing comes from
(``agent_token_standing_source_register``), since accounts sits below it.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

PREFIX = "wat_"
ACCESS_PREFIX = "wac_"

ACTIVE = "active"
READ_ONLY = "read_only"
DEAD = "dead"


@dataclass(frozen=True)
class AgentTokenStanding:
    """What a valid agent token may still do: ``ACTIVE``, ``READ_ONLY`` (until ``read_only_until``) or ``DEAD``."""

    state: str
    read_only_until: datetime | None = None


_standing_source: Callable[[uuid.UUID], AgentTokenStanding] | None = None


def agent_token_standing_source_register(*, source: Callable[[uuid.UUID], AgentTokenStanding]) -> None:
    """Where agent token standings come from (the workloads app registers it when it starts)."""
    global _standing_source
    _standing_source = source


def agent_token_standing(workload_id: uuid.UUID) -> AgentTokenStanding:
    """The standing of the agent token of ``workload_id``, read from the database now."""
    if _standing_source is None:
        raise ImproperlyConfigured("No source of agent token standings: is the workloads app installed?")
    return _standing_source(workload_id)


def agent_token_for(workload_id: uuid.UUID | str) -> str:
    return _token(PREFIX, workload_id)


def agent_token_workload_id(token: str) -> uuid.UUID | None:
    """The workload an agent token belongs to, or None if it is not a valid one."""
    return _workload_of(PREFIX, token)


def access_token_for(workload_id: uuid.UUID | str) -> str:
    return _token(ACCESS_PREFIX, workload_id)


def access_token_workload_id(token: str) -> uuid.UUID | None:
    """The workload an endpoint access token belongs to, or None if it is not a valid one."""
    return _workload_of(ACCESS_PREFIX, token)


def _token(prefix: str, workload_id: uuid.UUID | str) -> str:
    return f"{prefix}{workload_id}_{_signature(prefix, str(workload_id))}"


def _workload_of(prefix: str, token: str) -> uuid.UUID | None:
    if not token.startswith(prefix):
        return None
    workload_part, _, signature = token[len(prefix) :].rpartition("_")
    try:
        workload_id = uuid.UUID(workload_part)
    except ValueError:
        return None
    if not hmac.compare_digest(signature, _signature(prefix, str(workload_id))):
        return None
    return workload_id


def _signature(prefix: str, workload_id: str) -> str:
    message = f"{prefix}{workload_id}".encode()
    return hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).hexdigest()
