"""Per-workload agent tokens: what a workload's own instance uses to call the API.

A token is ``wat_<workload id>_<HMAC-SHA256(SECRET_KEY, workload id)>``: it can
be derived again for every instance the workload ever gets (migrations
included) without storing it, and it grants access to that one workload only.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid

from django.conf import settings

PREFIX = "wat_"


def agent_token_for(workload_id: uuid.UUID | str) -> str:
    return f"{PREFIX}{workload_id}_{_signature(str(workload_id))}"


def agent_token_workload_id(token: str) -> uuid.UUID | None:
    """The workload a token belongs to, or None if it is not a valid agent token."""
    if not token.startswith(PREFIX):
        return None
    workload_part, _, signature = token[len(PREFIX) :].rpartition("_")
    try:
        workload_id = uuid.UUID(workload_part)
    except ValueError:
        return None
    if not hmac.compare_digest(signature, _signature(str(workload_id))):
        return None
    return workload_id


def _signature(workload_id: str) -> str:
    return hmac.new(settings.SECRET_KEY.encode(), f"agent-token:{workload_id}".encode(), hashlib.sha256).hexdigest()
