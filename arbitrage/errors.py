"""Domain errors: raised by services, turned into HTTP answers at the API edge."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A refused request with a stable machine-readable code.

    ``status`` is the HTTP status the API answers with; ``extra`` goes into the
    error body beside the message (for example the workload's current state).
    """

    status = 400
    code = "invalid_request"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class ConflictError(DomainError):
    status = 409
    code = "conflict"
