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


class LogOffsetGap(ConflictError):
    """Pushed output that starts past what the log has: ``expected_offset`` says where to resend from."""

    code = "log_offset_gap"


class LogFinished(ConflictError):
    """Pushed output for an instance whose log was finished (it ended): nothing more is taken."""

    code = "log_finished"


class NoCurrentInstance(ConflictError):
    code = "no_current_instance"


class LogBatchTooLarge(DomainError):
    status = 413
    code = "log_batch_too_large"
