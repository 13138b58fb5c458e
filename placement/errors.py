"""Placement's refusals, answered by the API with the project's one error shape."""

from __future__ import annotations

from arbitrage.errors import DomainError


class NoPlacement(DomainError):
    """No offer meets the requirements; ``requirement`` names the one that excluded everything."""

    status = 422
    code = "no_placement"

    def __init__(self, message: str, *, requirement: str) -> None:
        super().__init__(message, requirement=requirement)
        self.requirement = requirement


class InvalidRequirements(DomainError):
    """Requirements given to the optimizer that ``RequirementsSerializer`` refuses."""

    status = 400
    code = "invalid"

    def __init__(self, message: str, *, fields: dict) -> None:
        super().__init__(message, fields=fields)
        self.fields = fields


class UnknownPriceSource(DomainError):
    status = 400
    code = "unknown_price_source"
