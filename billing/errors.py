"""Billing refusals, answered by the API as HTTP errors (arbitrage/api/errors.py)."""

from __future__ import annotations

from arbitrage.errors import DomainError


class BudgetExceeded(DomainError):
    """This month's spend has reached the customer's monthly budget: no new workloads until it is raised.

    402 Payment Required: the request is well formed and nothing conflicts with
    it; what it lacks is budget. The body also carries ``month``, ``spend``,
    ``budget`` and ``currency``.
    """

    status = 402
    code = "budget_exceeded"
