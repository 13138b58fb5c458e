from arbitrage.errors import ConflictError, DomainError


class TransitionRefused(ConflictError):
    """The workload's current state does not allow the requested move."""

    code = "invalid_state"

    def __init__(self, *, workload_id, transition: str, current_state: str) -> None:
        super().__init__(
            f"Workload {workload_id} cannot {transition.replace('_', ' ')} while {current_state}.",
            current_state=current_state,
        )
        self.transition = transition
        self.current_state = current_state


class IdempotencyKeyReused(DomainError):
    status = 422
    code = "idempotency_key_reused"


class NoCheaperOffer(ConflictError):
    code = "no_cheaper_offer"
