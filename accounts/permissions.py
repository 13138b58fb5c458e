"""What an authenticated agent token may do once its workload is terminated."""

from __future__ import annotations

from rest_framework.permissions import SAFE_METHODS, BasePermission

from accounts.authentication import WorkloadAgent
from arbitrage.errors import DomainError


class AgentTokenReadOnly(DomainError):
    status = 403
    code = "agent_token_read_only"


class AgentTokenWrites(BasePermission):
    """A read-only agent token (its workload is terminated, its storage still kept) may only read.

    Reading is a safe method, or a method the view names in ``agent_read_methods``
    (a POST that only reads, such as asking for a download URL). Anything else is
    refused with 403 ``agent_token_read_only``. Other callers are left to the
    view's other permissions.
    """

    def has_permission(self, request, view) -> bool:
        agent = request.user
        if not isinstance(agent, WorkloadAgent) or not agent.read_only:
            return True
        if request.method in SAFE_METHODS or request.method in getattr(view, "agent_read_methods", ()):
            return True
        until = agent.read_only_until
        raise AgentTokenReadOnly(
            f"The workload is terminated: its agent token may only list and download its storage "
            f"until the retention ends ({until.isoformat()}).",
            workload_id=str(agent.workload_id),
            read_only_until=until.isoformat(),
        )
